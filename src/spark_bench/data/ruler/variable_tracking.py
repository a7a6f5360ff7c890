"""RULER's variable tracking task ``vt`` (multi-hop tracing), generated locally.

Follows RULER scripts/data/synthetic/variable_tracking.py with synthetic.yaml's ``vt`` row (noise
haystack, 1 chain of 4 hops): a chain ``VAR A = 12345``, ``VAR B = VAR A``, ... hidden at random
lines of the noise haystack; the answer is every variable of the chain. As in RULER, the prompt
opens with one worked example (variables of 3 letters, fitted to 500 tokens once per task,
then renamed with fresh variables and value for each sample). Deviation: variable names are
drawn without repeats (RULER draws with replacement and tops up, which can repeat a name).
"""

from __future__ import annotations

import random
import string

from spark_bench.data.ruler.fitting import CountTokens, fit_samples, largest_size, task_seed
from spark_bench.data.ruler.haystack import NOISE_SENTENCE
from spark_bench.data.sample import Sample

# RULER scripts/data/synthetic/constants.py, task "variable_tracking".
TEMPLATE_HEAD = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
TEMPLATE_QUESTION = "Question: Find all variables that are assigned the value {query} in the text above."
ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables "
    "are assigned the value {query}, they are: "
)
TOKENS_TO_GENERATE = 30
NUM_CHAINS, NUM_HOPS = 1, 4  # RULER synthetic.yaml, vt
NAME_LENGTH, EXAMPLE_NAME_LENGTH = 5, 3  # variable_tracking.py generate_chains: k=5, k=3 for the example
EXAMPLE_VALUE = "12345"  # variable_tracking.py: the example's value before it is randomised
EXAMPLE_TOKENS = 500  # variable_tracking.py main(): the example is fitted to 500 tokens
EXAMPLE_STEP = 5
STEP, SMALL_CONTEXT, SMALL_STEP = 10, 4096, 5  # noise haystack growth; by 5 below 4k


def _names(rng: random.Random, count: int, length: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=length))
        if name not in names:
            names.append(name)
    return names


def _value(rng: random.Random) -> str:
    return str(rng.randint(10000, 99998))  # numpy randint(10000, 99999): high exclusive


def _chains(rng: random.Random, name_length: int, value: str | None) -> list[list[str]]:
    """``NUM_CHAINS`` chains of ``NUM_HOPS`` + 1 variables; each chain's first line holds the value."""
    names = _names(rng, NUM_CHAINS * (NUM_HOPS + 1), name_length)
    chains = []
    for c in range(NUM_CHAINS):
        chain_vars = names[c * (NUM_HOPS + 1) : (c + 1) * (NUM_HOPS + 1)]
        lines = [f"VAR {chain_vars[0]} = {value or _value(rng)}"]
        # RULER's hop lines end in a space: "VAR B = VAR A "
        lines += [f"VAR {chain_vars[j + 1]} = VAR {chain_vars[j]} " for j in range(NUM_HOPS)]
        chains.append(lines)
    return chains


def _prompt(
    num_noises: int, rng: random.Random, name_length: int, value: str | None
) -> tuple[str, str, str, list[str]]:
    """(context part, question, answer prefix, answers) with the chains in a noise haystack."""
    chains = _chains(rng, name_length, value)
    sentences = [NOISE_SENTENCE] * num_noises
    for chain in chains:
        positions = sorted(rng.sample(range(len(sentences)), len(chain)))
        for offset, (position, line) in enumerate(zip(positions, chain, strict=True)):
            sentences.insert(position + offset, line)
    context = "\n".join(sentences).replace(". \n", ".\n")
    query = chains[0][0].split("=")[-1].strip()
    answers = [line.split()[1] for line in chains[0]]
    return (
        TEMPLATE_HEAD + context + "\n",
        TEMPLATE_QUESTION.format(query=query),
        ANSWER_PREFIX.format(num_v=NUM_HOPS + 1, query=query),
        answers,
    )


def _example(count_tokens: CountTokens, seed: int) -> tuple[str, list[str]]:
    """RULER's worked example: a vt prompt of at most 500 tokens with its answer appended;
    also the answer's variable names, which each sample renames."""

    def text(size: int) -> str:
        head, question, prefix, answers = _prompt(
            size, random.Random(seed), EXAMPLE_NAME_LENGTH, EXAMPLE_VALUE
        )
        return head + question + prefix + " " + " ".join(answers) + "\n"

    size, _ = largest_size(text, EXAMPLE_TOKENS, EXAMPLE_STEP, count_tokens, NUM_HOPS + 1)
    example = text(size)
    return example, example.split()[-(NUM_HOPS + 1) :]


def _randomised(example: str, names: list[str], rng: random.Random) -> str:
    """variable_tracking.py randomize_icl: fresh names of the same length and a fresh value."""
    for name in names:
        example = example.replace(name, "".join(rng.choices(string.ascii_uppercase, k=len(name))))
    return example.replace(EXAMPLE_VALUE, _value(rng))


def generate(
    task: str, num_samples: int, context_length: int, count_tokens: CountTokens, seed: int
) -> list[Sample]:
    example, example_names = _example(count_tokens, task_seed(seed, task) + 2)

    def build(size: int, rng: random.Random, _index: int) -> tuple[Sample, str]:
        shot = _randomised(example, example_names, rng)
        head, question, prefix, answers = _prompt(size, rng, NAME_LENGTH, None)
        sample = Sample(
            id="",
            task=task,
            context=shot + "\n" + head,  # RULER joins example and prompt with a newline
            question=question,
            answer_prefix=prefix,
            answers=tuple(answers),
            max_new_tokens=TOKENS_TO_GENERATE,
        )
        return sample, sample.context + question + prefix

    step = SMALL_STEP if context_length < SMALL_CONTEXT else STEP
    chain = NUM_HOPS + 1  # the haystack needs a line per chain line to insert them at
    return fit_samples(
        task, num_samples, context_length, TOKENS_TO_GENERATE, count_tokens, seed, build, step, chain
    )
