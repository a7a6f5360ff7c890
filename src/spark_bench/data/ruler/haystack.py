"""Word lists, needle values and haystack text shared by the RULER task families.

RULER's essay haystack is Paul Graham's essays, a download; ours is seeded synthetic prose built
from the wonderwords lists RULER itself uses for keys and words (fixed seed, so the haystack is
one text for every run, as RULER's is).
"""

from __future__ import annotations

import random
import re
import uuid
from functools import cache

# RULER niah.py / variable_tracking.py: the "noise" haystack unit.
NOISE_SENTENCE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
ESSAY_SEED = 0  # fixed: the essay haystack is one text, like RULER's
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# RULER niah.py / variable_tracking.py: 40 evenly spaced insertion depths in percent.
DEPTHS = tuple(round(i * 100 / 39) for i in range(40))


@cache
def wordlists() -> tuple[list[str], list[str], list[str]]:
    """wonderwords' nouns, adjectives and verbs, deduplicated and sorted (RULER's word source)."""
    from wonderwords.random_word import _get_words_from_text_file

    return tuple(
        sorted(set(_get_words_from_text_file(f)))
        for f in ("nounlist.txt", "adjectivelist.txt", "verblist.txt")
    )  # type: ignore[return-value]


def random_value(rng: random.Random, kind: str) -> str:
    """A needle key or value of RULER's types."""
    if kind == "numbers":  # RULER: a 7-digit number
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        nouns, adjectives, _ = wordlists()
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
def essay_words(count: int) -> tuple[str, ...]:
    """The first ``count`` words of the fixed synthetic essay (a prefix-stable sequence)."""
    nouns, adjectives, verbs = wordlists()
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


def essay_sentences(num_words: int) -> list[str]:
    """RULER: the first ``num_words`` essay words, split into sentences (at ``.!?`` + space,
    not nltk's ``sent_tokenize``, whose model is a download)."""
    return SENTENCE_END.split(" ".join(essay_words(num_words)))
