"""RULER's question answering tasks ``qa_1`` (SQuAD) and ``qa_2`` (HotpotQA), built locally.

Follows RULER scripts/data/synthetic/qa.py: the question's gold documents hidden among
distractors, as many as fit, each written ``Document i:\\n<text>``, in an order fixed by a
fixed-seed shuffle (as in RULER, all samples of one size put their gold documents at the same
places). The source of questions and documents is either RULER's own download (``qa_dir``
holding ``squad.json`` = SQuAD v2.0 dev and ``hotpotqa.json`` = HotpotQA dev distractor, read
exactly as RULER reads them: question i is the i-th answerable question) or, with no
download, the synthetic documents of ``passages.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from spark_bench.data import files
from spark_bench.data.ruler import passages
from spark_bench.data.ruler.fitting import CountTokens, fit_samples
from spark_bench.data.sample import Sample

# RULER scripts/data/synthetic/constants.py, task "qa".
INSTRUCTION = (
    "Answer the question based on the given documents. "
    "Only give me the answer and do not output any other words."
)
TEMPLATE_HEAD = INSTRUCTION + "\n\nThe following are given documents.\n\n"
TEMPLATE_QUESTION = INSTRUCTION + "\n\nQuestion: {query}"
ANSWER_PREFIX = " Answer:"
DOCUMENT = "Document {i}:\n{document}"
TOKENS_TO_GENERATE = 32
STEP = 10  # qa.py: documents are added and removed 10 at a time
# synthetic.yaml: the source of each QA task, and RULER's file name for it.
SOURCES = {"qa_1": "squad", "qa_2": "hotpotqa"}
FILES = {"squad": "squad.json", "hotpotqa": "hotpotqa.json"}
DESCRIPTIONS = {"squad": "SQuAD v2.0 dev", "hotpotqa": "HotpotQA dev distractor"}
FETCH_AGAIN = "fetch it again with RULER's scripts/data/synthetic/json/download_qa_dataset.sh"


@dataclass(frozen=True)
class _Item:
    query: str
    answers: tuple[str, ...]
    gold: tuple[int, ...]  # document indices
    more: tuple[int, ...] = ()  # other paragraphs of the same article (SQuAD)


@dataclass(frozen=True)
class QAPool:
    items: tuple[_Item, ...]
    documents: tuple[str, ...]


def read_squad(path: Path) -> QAPool:
    """qa.py read_squad: answerable questions of SQuAD, documents = distinct paragraphs, sorted."""
    data = files.read_json(path)["data"]
    documents = sorted({p["context"] for d in data for p in d["paragraphs"]})
    index = {text: i for i, text in enumerate(documents)}
    items = []
    for article in data:
        article_docs = [index[p["context"]] for p in article["paragraphs"]]
        for paragraph in article["paragraphs"]:
            own = index[paragraph["context"]]
            for qa in paragraph["qas"]:
                if not qa["is_impossible"]:
                    items.append(
                        _Item(
                            qa["question"],
                            tuple(a["text"] for a in qa["answers"]),
                            (own,),
                            tuple(i for i in article_docs if i != own),
                        )
                    )
    return QAPool(tuple(items), tuple(documents))


def read_hotpotqa(path: Path) -> QAPool:
    """qa.py read_hotpotqa: documents = "title\\nparagraph", all 10 of a question are its own."""
    data = files.read_json(path)
    documents = sorted({f"{title}\n{''.join(sentences)}" for d in data for title, sentences in d["context"]})
    index = {text: i for i, text in enumerate(documents)}
    items = [
        _Item(d["question"], (d["answer"],), tuple(index[f"{t}\n{''.join(s)}"] for t, s in d["context"]))
        for d in data
    ]
    return QAPool(tuple(items), tuple(documents))


@cache
def load_pool(qa_dir: str, task: str) -> QAPool:
    path = Path(qa_dir) / FILES[SOURCES[task]]
    if not path.is_file():
        raise FileNotFoundError(
            f"RULER {task}: {path} does not exist (dataset.qa_dir={qa_dir}); it must hold RULER's "
            f"{sorted(FILES.values())} (scripts/data/synthetic/json/download_qa_dataset.sh)"
        )
    read = read_squad if SOURCES[task] == "squad" else read_hotpotqa
    try:
        return read(path)
    except (KeyError, TypeError, AttributeError, IndexError) as err:  # only the file's shape fails there
        layout = DESCRIPTIONS[SOURCES[task]]
        raise files.DataFileError(
            f"{path} is not laid out as {layout} ({type(err).__name__}: {err}): {FETCH_AGAIN}"
        ) from None


def _pool_documents(pool: QAPool, item: _Item, num_docs: int, rng: random.Random) -> list[str]:
    """qa.py generate_input_output: gold, then same-article, then random documents."""
    gold, more = list(item.gold), list(item.more)
    if num_docs < len(pool.documents):
        if num_docs - len(gold) > len(more):
            taken = set(gold + more)
            others = [i for i in range(len(pool.documents)) if i not in taken]
            chosen = gold + more + rng.sample(others, max(0, num_docs - len(gold) - len(more)))
        else:
            chosen = gold + rng.sample(more, max(0, num_docs - len(gold)))
        return [pool.documents[i] for i in chosen]
    repeats = -(-num_docs // len(pool.documents))
    return list(pool.documents * repeats)[:num_docs]


def _synthetic_documents(task: str, num_docs: int, rng: random.Random) -> tuple[passages.Question, list[str]]:
    make = passages.single_hop if SOURCES[task] == "squad" else passages.two_hop
    question, distractor = make(rng)
    return question, list(question.gold) + [distractor() for _ in range(num_docs - len(question.gold))]


def generate(
    task: str,
    num_samples: int,
    context_length: int,
    count_tokens: CountTokens,
    seed: int,
    qa_dir: str | None = None,
) -> list[Sample]:
    pool = load_pool(qa_dir, task) if qa_dir else None
    if pool is not None and num_samples > len(pool.items):
        held = len(pool.items)
        fix = f"set max_samples (or dataset.num_samples) to {held} or fewer" if held else FETCH_AGAIN
        raise ValueError(f"RULER {task}: {num_samples} samples asked, {qa_dir} holds {held} questions: {fix}")

    def build(num_docs: int, rng: random.Random, index: int) -> tuple[Sample, str]:
        if pool is None:
            question, documents = _synthetic_documents(task, num_docs, rng)
            query, answers = question.query, question.answers
        else:
            item = pool.items[index]
            query, answers = item.query, item.answers
            documents = _pool_documents(pool, item, num_docs, rng)
        random.Random(seed).shuffle(documents)  # RULER's fixed-seed shuffle
        context = "\n\n".join(DOCUMENT.format(i=i + 1, document=d) for i, d in enumerate(documents))
        sample = Sample(
            id="",
            task=task,
            context=TEMPLATE_HEAD + context + "\n\n",
            question=TEMPLATE_QUESTION.format(query=query),
            answer_prefix=ANSWER_PREFIX,
            answers=tuple(answers),
            max_new_tokens=TOKENS_TO_GENERATE,
        )
        return sample, sample.context + sample.question + sample.answer_prefix

    min_docs = 2  # the gold documents of a two-hop question
    return fit_samples(
        task, num_samples, context_length, TOKENS_TO_GENERATE, count_tokens, seed, build, STEP, min_docs
    )
