"""RULER's needle-in-a-haystack family (8 tasks), generated locally at any context length.

Follows RULER's generator (NVIDIA/RULER, scripts/data/synthetic/niah.py and synthetic.yaml):
the same template, needle sentence, key/value types, insertion depths, singular rewording for
one-needle questions, and the fitting rule ``tokens(prompt) + tokens_to_generate <=
context_length``. Deviations, each because RULER's inputs are downloads we cannot make offline:

- ``essay`` haystacks: RULER uses Paul Graham's essays; we use the synthetic prose of
  ``haystack.py``. Needle retrieval only needs distractor prose; absolute scores may differ a little.
- Word keys are ``adjective-noun`` drawn as two independent choices from wonderwords' lists,
  not one choice from RULER's precomputed cross product (the same set of keys, 6.2 M strings
  we do not materialise).
- Short contexts: see ``fitting.py`` (the step halves where RULER would overflow).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from spark_bench.data.ruler.fitting import CountTokens, fit_samples
from spark_bench.data.ruler.haystack import DEPTHS, NOISE_SENTENCE, essay_sentences, random_value
from spark_bench.data.sample import Sample

# RULER scripts/data/synthetic/constants.py, task "niah".
TEMPLATE_HEAD = (
    "Some special magic {type_needle_v} are hidden within the following text. "
    "Make sure to memorize it. I will quiz you about the {type_needle_v} afterwards."
)
TEMPLATE_QUESTION = (
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
TOKENS_TO_GENERATE = 128  # RULER constants.py, niah
# RULER niah.py: haystack growth step when a sample comes out too long.
INCREMENT = {"essay": 500, "noise": 25, "needle": 25}
SMALL_CONTEXT = 4096  # RULER niah.py: below this, non-essay haystacks grow by 5
SMALL_INCREMENT = 5


@dataclass(frozen=True)
class NiahTask:
    """One row of RULER's synthetic.yaml for the niah family."""

    haystack: str  # noise | essay | needle
    key_type: str  # words | numbers | uuids
    value_type: str
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1


NIAH_TASKS: dict[str, NiahTask] = {
    "niah_single_1": NiahTask("noise", "words", "numbers"),
    "niah_single_2": NiahTask("essay", "words", "numbers"),
    "niah_single_3": NiahTask("essay", "words", "uuids"),
    "niah_multikey_1": NiahTask("essay", "words", "numbers", num_keys=4),
    "niah_multikey_2": NiahTask("needle", "words", "numbers"),
    "niah_multikey_3": NiahTask("needle", "uuids", "uuids"),
    "niah_multivalue": NiahTask("essay", "words", "numbers", num_values=4),
    "niah_multiquery": NiahTask("essay", "words", "numbers", num_keys=4, num_queries=4),
}


def _singular(text: str) -> str:
    # RULER niah.py rewords a one-needle question in the singular with these exact replacements.
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        text = text.replace(old, new)
    return text


def _build(task: NiahTask, rng: random.Random, num_haystack: int) -> tuple[Sample, str]:
    """One sample with ``num_haystack`` haystack units; also the full prompt text for length fitting."""
    keys, values, needles = [], [], []
    for _ in range(task.num_keys):
        keys.append(random_value(rng, task.key_type))
        value = []
        for _ in range(task.num_values):
            value.append(random_value(rng, task.value_type))
            needles.append(NEEDLE.format(type_needle_v=task.value_type, key=keys[-1], value=value[-1]))
        values.append(value)
    rng.shuffle(needles)

    if task.haystack == "essay":
        # RULER: the first num_haystack words of the essay, split into sentences.
        sentences = essay_sentences(num_haystack)
        depths = sorted(int(len(sentences) * d / 100) for d in rng.sample(DEPTHS, len(needles)))
        for offset, (position, needle) in enumerate(zip(depths, needles, strict=True)):
            sentences.insert(position + offset, needle)
        context = " ".join(sentences)
    else:
        if task.haystack == "noise":
            sentences = [NOISE_SENTENCE] * num_haystack
        else:  # "needle": distractor needles with random keys and values
            sentences = [
                NEEDLE.format(
                    type_needle_v=task.value_type,
                    key=random_value(rng, task.key_type),
                    value=random_value(rng, task.value_type),
                )
                for _ in range(num_haystack)
            ]
        for index, needle in zip(
            sorted(rng.sample(range(num_haystack), len(needles)), reverse=True), needles, strict=True
        ):
            sentences.insert(index, needle)
        context = "\n".join(sentences)

    queried = rng.sample(range(task.num_keys), task.num_queries)
    queries = [keys[i] for i in queried]
    answers = tuple(a for i in queried for a in values[i])
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]

    head, question, prefix = TEMPLATE_HEAD, TEMPLATE_QUESTION, ANSWER_PREFIX
    type_v = task.value_type
    if task.num_queries * task.num_values == 1:
        head, question, prefix = _singular(head), _singular(question), _singular(prefix)
        type_v = type_v[:-1]
    # The official prompt is "<head>\n<haystack>\n<question><answer prefix>".
    context_part = head.format(type_needle_v=type_v) + "\n" + context + "\n"
    question_part = question.format(type_needle_v=type_v, query=query)
    prefix_part = prefix.format(type_needle_v=type_v, query=query)
    sample = Sample(
        id="",
        task="",
        context=context_part,
        question=question_part,
        answer_prefix=prefix_part,
        answers=answers,
        max_new_tokens=TOKENS_TO_GENERATE,
    )
    return sample, context_part + question_part + prefix_part


def generate(
    task_name: str, num_samples: int, context_length: int, count_tokens: CountTokens, seed: int
) -> list[Sample]:
    """``num_samples`` samples of one niah task that fit ``context_length`` tokens."""
    if task_name not in NIAH_TASKS:
        raise ValueError(f"RULER niah task {task_name!r} is not one of {list(NIAH_TASKS)}")
    task = NIAH_TASKS[task_name]
    step = INCREMENT[task.haystack]
    if task.haystack != "essay" and context_length < SMALL_CONTEXT:
        step = SMALL_INCREMENT
    return fit_samples(
        task_name,
        num_samples,
        context_length,
        TOKENS_TO_GENERATE,
        count_tokens,
        seed,
        lambda size, rng, _index: _build(task, rng, size),
        step,
    )
