"""Synthetic documents for RULER's QA tasks when RULER's own sources are not at hand.

RULER draws its QA documents and questions from SQuAD v2 dev (``qa_1``) and HotpotQA dev
distractor (``qa_2``), downloads that ``dataset.qa_dir`` can point to. Without them we generate
encyclopedia-style paragraphs about invented towns and people, so that no answer can come from a
model's memory:

- ``qa_1`` (single hop, like SQuAD): one document states the fact asked; the distractors are
  documents of the same shape about other towns.
- ``qa_2`` (two hops, like HotpotQA's bridge questions): "In which town was the founder of X
  born?" needs the town's document (its founder) and the founder's document (the birthplace);
  both gold documents carry a title line, as RULER's HotpotQA documents do.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

_ONSETS = (
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "tr",
    "v",
    "z",
)
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "m", "nd", "x")
_REGIONS = ("northern highlands", "eastern lowlands", "southern coast", "western plains", "central basin")
_PRODUCTS = ("wool", "pottery", "salt", "glass", "timber", "cheese", "copper", "silk", "honey", "paper")
_TRADES = (
    "bridge builder",
    "cartographer",
    "glassmaker",
    "physician",
    "astronomer",
    "shipwright",
    "botanist",
    "printer",
)
_MONTHS = ("January", "March", "May", "July", "September", "November")
FIRST_YEAR, LAST_YEAR = 1200, 1899


@dataclass(frozen=True)
class Question:
    query: str
    answers: tuple[str, ...]
    gold: tuple[str, ...]  # the documents that answer it


class _Names:
    """Invented proper names, never repeated within one sample."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def word(self, syllables: int) -> str:
        while True:
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
            name = ("".join(parts) + self.rng.choice(_CODAS)).capitalize()
            if name not in self.used:
                self.used.add(name)
                return name

    def person(self) -> str:
        return f"{self.word(2)} {self.word(3)}"


def _town(names: _Names, founder: str | None = None) -> tuple[str, dict[str, str], str]:
    rng = names.rng
    town = names.word(3)
    facts = {
        "founder": founder or names.person(),
        "year": str(rng.randint(FIRST_YEAR, LAST_YEAR)),
        "region": rng.choice(_REGIONS),
        "product": rng.choice(_PRODUCTS),
        "river": names.word(2),
        "month": rng.choice(_MONTHS),
    }
    text = (
        f"{town} is a small town in the {facts['region']}. It was founded in {facts['year']} by "
        f"{facts['founder']}, who chose the site for its ford across the {facts['river']} river. "
        f"The town is best known for its {facts['product']}, which is sold at a fair held every "
        f"{facts['month']}. Most of its old houses stand along the {facts['river']}."
    )
    return town, facts, text


def _person(names: _Names, person: str) -> tuple[dict[str, str], str]:
    rng = names.rng
    facts = {
        "birthplace": names.word(3),
        "trade": rng.choice(_TRADES),
        "year": str(rng.randint(FIRST_YEAR, LAST_YEAR)),
    }
    text = (
        f"{person} was a {facts['trade']} born in {facts['birthplace']} in {facts['year']}. "
        f"After an apprenticeship far from home, {person} travelled widely and settled in the "
        f"place that later remembered the name."
    )
    return facts, text


_SINGLE_HOP: tuple[tuple[str, str], ...] = (
    ("In what year was {town} founded?", "year"),
    ("Who founded {town}?", "founder"),
    ("What is {town} best known for?", "product"),
    ("Which river runs through {town}?", "river"),
    ("In which month is the fair of {town} held?", "month"),
)


def single_hop(rng: random.Random) -> tuple[Question, Callable[[], str]]:
    """A qa_1 question with its gold document, and a maker of distractor documents."""
    names = _Names(rng)
    town, facts, text = _town(names)
    template, field = rng.choice(_SINGLE_HOP)
    question = Question(template.format(town=town), (facts[field],), (text,))
    return question, lambda: _town(names)[2]


def two_hop(rng: random.Random) -> tuple[Question, Callable[[], str]]:
    """A qa_2 bridge question with its two titled gold documents, and a maker of distractors."""
    names = _Names(rng)
    founder = names.person()
    town, _, town_text = _town(names, founder)
    person_facts, person_text = _person(names, founder)
    question = Question(
        f"In which town was the founder of {town} born?",
        (person_facts["birthplace"],),
        (f"{town}\n{town_text}", f"{founder}\n{person_text}"),
    )

    def distractor() -> str:
        if rng.random() < 0.5:
            other, _, text = _town(names)
            return f"{other}\n{text}"
        other = names.person()
        return f"{other}\n{_person(names, other)[1]}"

    return question, distractor
