"""RULER's frequent words extraction task ``fwe`` (aggregation), generated locally.

Follows RULER scripts/data/synthetic/freq_words_extraction.py with synthetic.yaml's ``fwe`` row
(alpha 2): a text of random 6-letter "coded" words whose counts follow a zeta distribution over
a vocabulary of ``(context_length - 50) // 50`` words; the most frequent word is replaced by
``...`` (noise), and the answer is the next three. As in RULER, vocabulary and text are shuffled
by a fixed-seed shuffle. Deviation: the text size is found by the binary search every local
task uses, where RULER grows it in steps of 1/32 of the length; both give the largest text that
fits, and every sample is checked to fit (RULER checks only the first).
"""

from __future__ import annotations

import math
import random
import string

from spark_bench.data.ruler.fitting import CountTokens, fit_samples
from spark_bench.data.sample import Sample

# RULER scripts/data/synthetic/constants.py, task "freq_words_extraction".
TEMPLATE_HEAD = (
    "Read the following coded text and track the frequency of each coded word. "
    "Find the three most frequently appeared coded words. "
)
TEMPLATE_QUESTION = (
    "Question: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
ANSWER_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
TOKENS_TO_GENERATE = 50
WORD_LENGTH = 6  # freq_words_extraction.py --coded_wordlen
TOKENS_PER_VOCAB_WORD = 50  # freq_words_extraction.py: vocab_size = max_seq_length // 50
ALPHA = 2.0  # synthetic.yaml fwe
ZETA_ALPHA = math.pi**2 / 6  # scipy.special.zeta(2.0), the normaliser RULER uses
NOISE_WORD = "..."  # the top-ranked word, "treat the top ranked as noise"
STEP_FRACTION = 32  # RULER grows the text by max_len // 32 words
# The smallest nominal size at which ranks 2-4 are strictly more frequent than rank 5
# (counts int(n * k**-2 / zeta(2)): at n=100, 15, 6, 3 and 2).
MIN_WORDS = 100


def _vocabulary(rng: random.Random, size: int, seed: int) -> list[str]:
    vocab: set[str] = set()
    while len(vocab) < size:
        vocab.add("".join(rng.choices(string.ascii_lowercase, k=WORD_LENGTH)))
    ordered = sorted(vocab)
    random.Random(seed).shuffle(ordered)  # RULER's fixed-seed shuffle
    ordered[0] = NOISE_WORD
    return ordered


def _text(vocab: list[str], num_words: int, seed: int) -> str:
    words = [
        word for rank, word in enumerate(vocab, 1) for _ in range(int(num_words * rank**-ALPHA / ZETA_ALPHA))
    ]
    random.Random(seed).shuffle(words)
    return " ".join(words)


def generate(
    task: str, num_samples: int, context_length: int, count_tokens: CountTokens, seed: int
) -> list[Sample]:
    budget = context_length - TOKENS_TO_GENERATE
    vocab_size = max(budget // TOKENS_PER_VOCAB_WORD, 5)  # at least the noise word, answers and one more

    def build(num_words: int, rng: random.Random, _index: int) -> tuple[Sample, str]:
        vocab = _vocabulary(rng, vocab_size, seed)
        sample = Sample(
            id="",
            task=task,
            context=TEMPLATE_HEAD + _text(vocab, num_words, seed) + "\n",
            question=TEMPLATE_QUESTION,
            answer_prefix=ANSWER_PREFIX,
            answers=tuple(vocab[1:4]),
            max_new_tokens=TOKENS_TO_GENERATE,
        )
        return sample, sample.context + sample.question + sample.answer_prefix

    step = max(budget // STEP_FRACTION, MIN_WORDS)
    return fit_samples(
        task, num_samples, context_length, TOKENS_TO_GENERATE, count_tokens, seed, build, step, MIN_WORDS
    )
