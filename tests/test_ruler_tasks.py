"""The local generators of RULER's vt, cwe, fwe, qa_1 and qa_2, its other sources, and its config."""

from __future__ import annotations

import collections
import itertools
import json
import re

import pytest

from spark_bench.config import ConfigError, validate
from spark_bench.data import ruler
from spark_bench.data.ruler import qa, sources
from tests.helpers import compose_config, prompt

# RULER's rule: prompt + generated tokens <= context length. "Within 2%" is the promise.
LENGTH_TOLERANCE = 0.02


@pytest.mark.parametrize("task", ruler.TASKS)
def test_every_task_fills_its_length_within_two_percent(task, count_tokens):
    length = 8192
    samples = ruler.generate(task, 2, length, count_tokens, seed=5)
    assert [s.id for s in samples] == [f"{task}/0", f"{task}/1"]
    for sample in samples:
        total = count_tokens(prompt(sample)) + ruler.tokens_to_generate(task)
        assert (1 - LENGTH_TOLERANCE) * length <= total <= length
        assert sample.max_new_tokens == ruler.tokens_to_generate(task)
        assert (
            sample.answers
            and sample.question
            and prompt(sample).endswith(sample.question + sample.answer_prefix)
        )


@pytest.mark.parametrize("task", ["vt", "cwe", "fwe", "qa_1", "qa_2"])
def test_short_contexts_fit_and_are_seeded(task, count_tokens):
    samples = ruler.generate(task, 3, 2048, count_tokens, seed=1)
    assert all(count_tokens(prompt(s)) + ruler.tokens_to_generate(task) <= 2048 for s in samples)
    assert ruler.generate(task, 2, 2048, count_tokens, seed=1) == samples[:2]
    assert ruler.generate(task, 2, 2048, count_tokens, seed=2) != samples[:2]


def test_too_short_a_context_is_a_clear_error(count_tokens):
    with pytest.raises(ValueError, match=r"RULER vt: dataset.context_length=300 cannot hold"):
        ruler.generate("vt", 1, 300, count_tokens, seed=0)


def test_variable_tracking_hides_one_chain_once(count_tokens):
    sample = ruler.generate("vt", 1, 2048, count_tokens, seed=0)[0]
    names = sample.answers
    assert len(names) == 5 and all(re.fullmatch(r"[A-Z]{5}", n) for n in names)
    value = re.search(r"assigned the value (\d{5}) in the text above", sample.question).group(1)
    example, main = sample.context.split("\n\nMemorize and track")[0], sample.context.rsplit("Memorize", 1)[1]
    assert main.count(f"VAR {names[0]} = {value}\n") == 1
    for before, after in itertools.pairwise(names):
        assert main.count(f"VAR {after} = VAR {before} \n") == 1
    assert sum(line.startswith("VAR ") for line in main.split("\n")) == 5  # no other chain
    # RULER's worked example first: 3-letter variables, its answer after the prefix
    assert example.startswith("Memorize and track the chain(s)") and re.search(
        r"VAR [A-Z]{3} = \d{5}", example
    )
    assert re.search(r"they are:  [A-Z]{3} [A-Z]{3} [A-Z]{3} [A-Z]{3} [A-Z]{3}$", example)
    assert sample.answer_prefix.endswith(f"5 variables are assigned the value {value}, they are: ")


def _numbered(text: str) -> list[str]:
    return re.findall(r"\d+\. (\S+)", text)


@pytest.mark.parametrize(("length", "common", "rare"), [(2048, 6, 1), (4096, 30, 3)])
def test_common_words_repeat_as_ruler_says(length, common, rare, count_tokens):
    sample = ruler.generate("cwe", 1, length, count_tokens, seed=0)[0]
    shot, own = sample.context.rsplit("Below is a numbered list", 1)
    counts = collections.Counter(_numbered(own))
    assert len(sample.answers) == 10
    assert {counts[w] for w in sample.answers} == {common}
    assert set(counts.values()) == {common, rare} and len(counts) > 10
    # the worked example lists its own 10 common words as its answer
    shot_answer = _numbered(shot.rsplit("most often in the list are:", 1)[1])
    shot_counts = collections.Counter(_numbered(shot.rsplit("most often in the list are:", 1)[0]))
    assert sorted(shot_answer) == sorted(w for w, _ in shot_counts.most_common(10))


def test_frequent_words_answer_the_three_most_frequent_after_the_dots(count_tokens):
    sample = ruler.generate("fwe", 1, 4096, count_tokens, seed=0)[0]
    text = sample.context.removeprefix(ruler.freq_words.TEMPLATE_HEAD).strip().split()
    counts = collections.Counter(text).most_common()
    assert counts[0][0] == "..."
    assert [w for w, _ in counts[1:4]] == list(sample.answers)
    assert counts[3][1] > counts[4][1]  # ranks 2-4 strictly ahead of the rest
    assert all(re.fullmatch(r"[a-z]{6}", w) for w in sample.answers)


@pytest.mark.parametrize("task", ["qa_1", "qa_2"])
def test_synthetic_qa_holds_its_gold_documents_once(task, count_tokens):
    sample = ruler.generate(task, 1, 4096, count_tokens, seed=0)[0]
    documents = re.split(r"\n\nDocument \d+:\n", "\n\n" + sample.context.split("given documents.\n\n", 1)[1])
    documents = [d.strip() for d in documents if d.strip()]
    assert len(documents) > 10
    assert sample.context.count(sample.answers[0]) >= 1
    if task == "qa_1":
        asked = [d for d in documents if re.search(rf"\b{d.split()[0]}\b", sample.question)]
        assert len(asked) == 1 and sample.answers[0] in asked[0]
    else:
        town = re.search(r"the founder of (\w+) born\?$", sample.question).group(1)
        (town_doc,) = [d for d in documents if d.startswith(f"{town}\n")]
        founder = re.search(r"founded in \d+ by ([\w ]+?), who", town_doc).group(1)
        (founder_doc,) = [d for d in documents if d.startswith(f"{founder}\n")]
        assert f"born in {sample.answers[0]} in" in founder_doc


def write_squad(path) -> None:
    """SQuAD v2.0 dev's shape: articles of paragraphs of questions, some unanswerable."""
    data = {
        "data": [
            {
                "title": f"Article{a}",
                "paragraphs": [
                    {
                        "context": f"Paragraph {a}-{p}: the keeper of lighthouse {a}{p} was Ana {a}{p}. " * 3,
                        "qas": [
                            {
                                "question": f"Who kept lighthouse {a}{p}?",
                                "is_impossible": False,
                                "answers": [{"text": f"Ana {a}{p}", "answer_start": 0}],
                            },
                            {"question": "Unanswerable?", "is_impossible": True, "answers": []},
                        ],
                    }
                    for p in range(3)
                ],
            }
            for a in range(30)
        ]
    }
    path.write_text(json.dumps(data))


def write_hotpot(path) -> None:
    """HotpotQA dev distractor's shape: question, answer, 10 [title, sentences] paragraphs."""
    data = [
        {
            "question": f"Where was the author of book {i} born?",
            "answer": f"Town{i}",
            "context": [[f"Title{i}-{k}", [f"Sentence {i}-{k} one. ", "Two."]] for k in range(10)],
        }
        for i in range(20)
    ]
    path.write_text(json.dumps(data))


def test_qa_reads_rulers_own_sources_as_ruler_does(tmp_path, count_tokens):
    write_squad(tmp_path / "squad.json")
    write_hotpot(tmp_path / "hotpotqa.json")
    pool = qa.read_squad(tmp_path / "squad.json")
    assert len(pool.items) == 90 and len(pool.documents) == 90  # unanswerable questions dropped
    assert pool.items[0].query == "Who kept lighthouse 00?" and len(pool.items[0].more) == 2
    samples = ruler.generate("qa_1", 3, 2048, count_tokens, seed=0, qa_dir=str(tmp_path))
    for index, sample in enumerate(samples):
        item = pool.items[index]  # RULER: question i is the i-th answerable one
        assert sample.question.endswith(f"Question: {item.query}") and sample.answers == item.answers
        assert sample.context.count(pool.documents[item.gold[0]]) == 1
        assert all(pool.documents[i] in sample.context for i in item.more)  # same article first
    hotpot = ruler.generate("qa_2", 1, 2048, count_tokens, seed=0, qa_dir=str(tmp_path))[0]
    assert hotpot.answers == ("Town0",)
    assert all(f"Title0-{k}\nSentence 0-{k} one. Two." in hotpot.context for k in range(10))


def test_local_copies_in_both_layouts(tmp_path, count_tokens):
    generated = ruler.generate("niah_single_1", 3, 1024, count_tokens, seed=0)
    length_dir = tmp_path / "4096"
    (length_dir / "niah_single_1").mkdir(parents=True)
    # RULER prepare.py output: input (context + question), outputs, answer_prefix
    with open(length_dir / "niah_single_1" / "validation.jsonl", "w") as handle:
        for i, s in enumerate(generated):
            record = {
                "index": i,
                "input": s.context + s.question,
                "outputs": list(s.answers),
                "answer_prefix": s.answer_prefix,
                "length": 1000,
            }
            handle.write(json.dumps(record) + "\n")
    # the kvpress hub set's columns, as a jsonl file
    rows = [
        {
            "context": "ctx",
            "question": "q?",
            "answer_prefix": " A:",
            "answer": ["x"],
            "task": "vt",
            "max_new_tokens": 30,
        }
    ]
    (length_dir / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dataset = {
        "name": "ruler",
        "tasks": ["niah_single_1", "vt"],
        "source": "local",
        "data_dir": str(tmp_path),
        "context_length": 4096,
    }
    samples = ruler.load(dataset, count_tokens, seed=0, max_samples=2)
    assert [s.id for s in samples] == ["niah_single_1/0", "niah_single_1/1", "vt/0"]
    for got, want in zip(samples[:2], generated, strict=False):
        assert (got.context, got.question, got.answer_prefix, got.answers) == (
            want.context,
            want.question,
            want.answer_prefix,
            want.answers,
        )
        assert got.max_new_tokens == 128
    assert samples[2].answers == ("x",) and samples[2].max_new_tokens == 30


def test_hub_source_reads_the_kvpress_set(monkeypatch, count_tokens):
    import datasets

    calls = []

    def fake_load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return [
            {
                "context": "c",
                "question": "q",
                "answer_prefix": "p",
                "answer": ["1"],
                "task": "qa_1",
                "max_new_tokens": 32,
            }
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = {"name": "ruler", "tasks": ["qa_1"], "source": "hub", "context_length": 8192}
    (sample,) = ruler.load(dataset, count_tokens, seed=0, max_samples=None)
    assert calls == [("simonjegou/ruler", "8192", "test")] and sample.answers == ("1",)
    assert sources.HUB_ID == "simonjegou/ruler"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset.source=web"], r"dataset.source='web' is not one of \['generate', 'hub', 'local'\]"),
        (["dataset.source=local"], r"dataset.source=local reads dataset.data_dir, which is null"),
        (["dataset.data_dir=/tmp"], r"dataset.data_dir=/tmp is read only with dataset.source=local"),
        (["dataset.qa_dir=/nonexistent"], r"dataset.qa_dir=/nonexistent lacks RULER's"),
        (["dataset.context_length=0"], r"dataset.context_length=0 must be a positive integer"),
    ],
)
def test_bad_ruler_sources_fail_before_loading(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(["dataset=ruler", *overrides]))


def test_local_source_needs_the_length_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"has no folder 2048/ for dataset.context_length=2048"):
        validate(compose_config(["dataset=ruler", "dataset.source=local", f"dataset.data_dir={tmp_path}"]))
