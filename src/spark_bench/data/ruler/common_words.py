"""RULER's common words extraction task ``cwe`` (aggregation), generated locally.

Follows RULER scripts/data/synthetic/common_words_extraction.py with synthetic.yaml's ``cwe`` row:
a numbered list in which 10 words appear 30 times and the others 3 times (6 and 1 below 4k
tokens), preceded by one worked example (40 words 10/3 times; 20 words 3/1 below 4k), answered
by the 10 common words. Words come from wonderwords' nouns, adjectives and verbs, as in RULER.
Deviations: RULER switches to a word list it downloads with the data (``english_words.json``)
when a context needs more distinct words than wonderwords holds (8166, about 100k tokens); we
extend wonderwords instead with adjective+noun compounds. As in RULER, the list order comes
from a fixed-seed shuffle, so every list of one length is shuffled the same way.
"""

from __future__ import annotations

import random
from functools import cache

from spark_bench.data.ruler.fitting import CountTokens, fit_samples
from spark_bench.data.ruler.haystack import wordlists
from spark_bench.data.sample import Sample

# RULER scripts/data/synthetic/constants.py, task "common_words_extraction".
TEMPLATE_HEAD = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n"
)
TEMPLATE_QUESTION = "Question: What are the 10 most common words in the above list?"
ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
TOKENS_TO_GENERATE = 120
# synthetic.yaml cwe: freq_cw, freq_ucw, num_cw; common_words_extraction.py: num_fewshot 1 and the
# (words, common repeats, uncommon repeats) of the example and, below 4k tokens, of the sample.
NUM_COMMON, COMMON_REPEATS, UNCOMMON_REPEATS = 10, 30, 3
SMALL_CONTEXT = 4096
EXAMPLE = (40, 10, 3)
SMALL_EXAMPLE, SMALL_REPEATS = (20, 3, 1), (6, 1)
STEP = 10
EXTRA_WORDS_SEED = 1  # fixed: the compound words extending wonderwords are one list


@cache
def _words() -> tuple[str, ...]:
    nouns, adjectives, verbs = wordlists()
    return tuple(sorted(set(nouns + adjectives + verbs)))


@cache
def _extra_words(count: int) -> tuple[str, ...]:
    """``count`` adjective+noun compounds not in wonderwords (our stand-in for RULER's second list)."""
    nouns, adjectives, _ = wordlists()
    known, extra = set(_words()), {}
    rng = random.Random(EXTRA_WORDS_SEED)
    while len(extra) < count:
        word = rng.choice(adjectives) + rng.choice(nouns)
        if word not in known:
            extra[word] = None
    return tuple(extra)


def _numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {word}" for i, word in enumerate(words))


def _example(
    rng: random.Random, seed: int, num_words: int, common: int, uncommon: int
) -> tuple[str, list[str]]:
    """(numbered list, the common words), common_words_extraction.py get_example."""
    pool = _words()
    if num_words > len(pool):
        pool = pool + _extra_words(num_words - len(pool))
    chosen = rng.sample(pool, num_words)
    frequent, rare = chosen[:NUM_COMMON], chosen[NUM_COMMON:]
    listed = frequent * common + rare * uncommon
    random.Random(seed).shuffle(listed)  # RULER's fixed-seed shuffle
    return _numbered(listed), frequent


def generate(
    task: str, num_samples: int, context_length: int, count_tokens: CountTokens, seed: int
) -> list[Sample]:
    small = context_length < SMALL_CONTEXT
    example_shape = SMALL_EXAMPLE if small else EXAMPLE
    common, uncommon = SMALL_REPEATS if small else (COMMON_REPEATS, UNCOMMON_REPEATS)

    def build(num_words: int, rng: random.Random, _index: int) -> tuple[Sample, str]:
        shot_list, shot_answer = _example(rng, seed, *example_shape)
        words, answer = _example(rng, seed, num_words, common, uncommon)
        shot = (
            TEMPLATE_HEAD
            + shot_list
            + "\n"
            + TEMPLATE_QUESTION
            + ANSWER_PREFIX
            + " "
            + _numbered(shot_answer)
        )
        sample = Sample(
            id="",
            task=task,
            context=shot + "\n" + TEMPLATE_HEAD + words + "\n",
            question=TEMPLATE_QUESTION,
            answer_prefix=ANSWER_PREFIX,
            answers=tuple(answer),
            max_new_tokens=TOKENS_TO_GENERATE,
        )
        return sample, sample.context + sample.question + sample.answer_prefix

    return fit_samples(
        task, num_samples, context_length, TOKENS_TO_GENERATE, count_tokens, seed, build, STEP, NUM_COMMON + 1
    )
