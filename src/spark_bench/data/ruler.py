"""RULER needle-in-a-haystack tasks, generated locally at any context length.

Follows RULER's generator (NVIDIA/RULER, scripts/data/synthetic/niah.py and synthetic.yaml):
the same template, needle sentence, key/value types, insertion depths, singular rewording for
one-needle questions, and the fitting rule ``tokens(prompt) + tokens_to_generate <=
context_length``. Deviations, each because RULER's inputs are downloads we cannot make offline:

- ``essay`` haystacks: RULER uses Paul Graham's essays; we use seeded synthetic prose built from
  the wonderwords lists (fixed seed, so the haystack is the same text for every run, as
  RULER's is). Needle retrieval only needs distractor prose; absolute scores may differ a little.
- Word keys are ``adjective-noun`` drawn as two independent choices from wonderwords' lists,
  not one choice from RULER's precomputed cross product (the same set of keys, 6.2 M strings
  we do not materialise).
- Where even one haystack step (500 essay words) overflows a short context, the step halves
  until a sample fits; RULER would emit an over-long sample.
- The essay is split into sentences at ``.``/``!``/``?`` + space, not by nltk's ``sent_tokenize``
  (whose model is a download).
"""

from __future__ import annotations

import random
import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache

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
NOISE_SENTENCE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
TOKENS_TO_GENERATE = 128  # RULER constants.py, niah
# RULER niah.py: 40 evenly spaced insertion depths in percent.
DEPTHS = [round(i * 100 / 39) for i in range(40)]
# RULER niah.py: haystack growth step when a sample comes out too long.
INCREMENT = {"essay": 500, "noise": 25, "needle": 25}
SMALL_CONTEXT = 4096  # RULER niah.py: below this, non-essay haystacks grow by 5
SMALL_INCREMENT = 5
ESSAY_SEED = 0  # fixed: the essay haystack is one text, like RULER's


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
TASKS: tuple[str, ...] = tuple(NIAH_TASKS)

CountTokens = Callable[[str], int]


@cache
def _wordlists() -> tuple[list[str], list[str], list[str]]:
    from wonderwords.random_word import _get_words_from_text_file

    return tuple(
        sorted(set(_get_words_from_text_file(f)))
        for f in ("nounlist.txt", "adjectivelist.txt", "verblist.txt")
    )  # type: ignore[return-value]


def _random_value(rng: random.Random, kind: str) -> str:
    if kind == "numbers":  # RULER: a 7-digit number
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        nouns, adjectives, _ = _wordlists()
        return f"{rng.choice(adjectives)}-{rng.choice(nouns)}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"needle type {kind!r} is not one of ['numbers', 'words', 'uuids']")


_ESSAY_PATTERNS = (
    "The {a} {n} {v}s the {n2} because the {n3} is {a2}.",
    "Most people who {v} a {n} never ask why it feels {a}.",
    "I think the {a} {n} matters more than the {n2}.",
    "When you {v} the {n}, the {a} {n2} tends to follow.",
    "A {a} {n} is rarely what it seems at first.",
    "That is why the {n} and the {n2} both look {a} in hindsight.",
    "If the {n} were {a}, nobody would {v} it.",
    "Founders often {v} the {n} long before they notice the {a} {n2}.",
)


@cache
def _essay_words(count: int) -> tuple[str, ...]:
    """The first ``count`` words of the fixed synthetic essay (a prefix-stable sequence)."""
    nouns, adjectives, verbs = _wordlists()
    rng = random.Random(ESSAY_SEED)
    words: list[str] = []
    while len(words) < count:
        pattern = rng.choice(_ESSAY_PATTERNS)
        sentence = pattern.format(
            a=rng.choice(adjectives),
            a2=rng.choice(adjectives),
            n=rng.choice(nouns),
            n2=rng.choice(nouns),
            n3=rng.choice(nouns),
            v=rng.choice(verbs),
        )
        words += sentence.split()
    return tuple(words[:count])


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _singular(text: str) -> str:
    # RULER niah.py rewords a one-needle question in the singular with these exact replacements.
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        text = text.replace(old, new)
    return text


def _build(task: NiahTask, rng: random.Random, num_haystack: int) -> tuple[Sample, str]:
    """One sample with ``num_haystack`` haystack units; also the full prompt text for length fitting."""
    keys, values, needles = [], [], []
    for _ in range(task.num_keys):
        keys.append(_random_value(rng, task.key_type))
        value = []
        for _ in range(task.num_values):
            value.append(_random_value(rng, task.value_type))
            needles.append(NEEDLE.format(type_needle_v=task.value_type, key=keys[-1], value=value[-1]))
        values.append(value)
    rng.shuffle(needles)

    if task.haystack == "essay":
        # RULER: the first num_haystack words of the essay, split into sentences.
        sentences = _SENTENCE_END.split(" ".join(_essay_words(num_haystack)))
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
                    key=_random_value(rng, task.key_type),
                    value=_random_value(rng, task.value_type),
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


def task_seed(seed: int, task: str) -> int:
    """A per-task stream, stable across Python versions (str hashes are salted)."""
    return seed * 1_000_003 + zlib.crc32(task.encode())


def generate(
    task_name: str, num_samples: int, context_length: int, count_tokens: CountTokens, seed: int
) -> list[Sample]:
    """``num_samples`` samples of one niah task whose prompt plus 128 generated tokens fit
    ``context_length`` tokens of ``count_tokens``' tokenizer. The first k samples do not depend
    on ``num_samples``."""
    if task_name not in NIAH_TASKS:
        raise ValueError(f"RULER task {task_name!r} is not one of {list(TASKS)}")
    task = NIAH_TASKS[task_name]
    step = INCREMENT[task.haystack]
    if task.haystack != "essay" and context_length < SMALL_CONTEXT:
        step = SMALL_INCREMENT
    budget = context_length - TOKENS_TO_GENERATE

    def fits(n: int, rng: random.Random) -> tuple[bool, Sample]:
        sample, text = _build(task, rng, n)
        return count_tokens(text) <= budget, sample

    # Deviation: RULER's essay step (500 words) alone overflows short contexts, where RULER
    # would emit over-long samples; we halve the step until a probe fits.
    while step > 1 and not fits(step, random.Random(task_seed(seed, task_name) + 1))[0]:
        step //= 2
    # RULER: estimate tokens per haystack unit from one probe, then binary-search the largest size.
    probe_rng = random.Random(task_seed(seed, task_name) + 1)
    per_unit = count_tokens(_build(task, probe_rng, step)[1]) / step
    low, high, best = step, max(int(context_length / per_unit * 3), 2 * step), step
    while low <= high:
        mid = (low + high) // 2
        ok, _ = fits(mid, random.Random(task_seed(seed, task_name) + 1))
        if ok:
            best, low = mid, mid + 1
        else:
            high = mid - 1

    rng = random.Random(task_seed(seed, task_name))
    samples = []
    for index in range(num_samples):
        size = best
        while True:  # RULER: draw again with a smaller haystack until the sample fits
            ok, sample = fits(size, rng)
            if ok:
                break
            if size <= step:
                raise ValueError(
                    f"{task_name}: context_length={context_length} cannot hold the prompt and "
                    f"{TOKENS_TO_GENERATE} generated tokens; use a longer context"
                )
            size -= step
        samples.append(_with_id(sample, task_name, index))
    return samples


def _with_id(sample: Sample, task: str, index: int) -> Sample:
    return replace(sample, id=f"{task}/{index}", task=task)
