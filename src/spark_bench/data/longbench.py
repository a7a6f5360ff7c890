"""LongBench (arXiv 2308.14508): the one table that knows each task's official prompt,
generation length, metric and chat-template rule.

Prompts are copied verbatim from THUDM/LongBench ``LongBench/config/dataset2prompt.json`` and
lengths from ``dataset2maxlen.json`` (commit 2e00731f8d0bff23dc4325161044d0ed8af94c1e), typos
included ("asconcisely"): scores are only comparable with the official prompts. The metric per
task and the tasks that get no chat template (``pred.py``: "chat models are better off without
build prompts on these tasks") come from ``eval.py`` / ``pred.py`` of the same commit. Any change
here changes scores: note it in ``CHANGELOG`` below.

CHANGELOG
- 2026-11-25: first version, equal to the official files at the commit above.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_bench.data import files, hub
from spark_bench.data.sample import Sample


@dataclass(frozen=True)
class LongBenchTask:
    name: str
    prompt: str  # str.format template over a record's fields ({context}, {input})
    max_new_tokens: int
    metric: str  # a name in spark_bench.metrics.longbench.METRICS
    chat_template: bool


# Tasks whose prediction is cut to its first line before scoring (official eval.py).
FIRST_LINE_TASKS = ("trec", "triviaqa", "samsum", "lsht")
# LongBench-E: the tasks with a length-balanced "_e" variant (official README / eval.py --e).
LONGBENCH_E_TASKS = (
    "qasper",
    "multifieldqa_en",
    "hotpotqa",
    "2wikimqa",
    "gov_report",
    "multi_news",
    "trec",
    "triviaqa",
    "samsum",
    "passage_count",
    "passage_retrieval_en",
    "lcc",
    "repobench-p",
)
# LongBench-E length buckets (eval.py scorer_e), by the record's "length" field in words.
LONGBENCH_E_BUCKETS = ((0, 4000, "0-4k"), (4000, 8000, "4-8k"), (8000, None, "8k+"))

_TASKS = (
    LongBenchTask(
        "narrativeqa",
        "You are given a story, which can be either a novel or a movie script, and a question. Answer the question asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
        max_new_tokens=128,
        metric="qa_f1",
        chat_template=True,
    ),
    LongBenchTask(
        "qasper",
        'You are given a scientific article and a question. Answer the question as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write "unanswerable". If the question is a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:',
        max_new_tokens=128,
        metric="qa_f1",
        chat_template=True,
    ),
    LongBenchTask(
        "multifieldqa_en",
        "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
        max_new_tokens=64,
        metric="qa_f1",
        chat_template=True,
    ),
    LongBenchTask(
        "multifieldqa_zh",
        "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n问题：{input}\n回答：",
        max_new_tokens=64,
        metric="qa_f1_zh",
        chat_template=True,
    ),
    LongBenchTask(
        "hotpotqa",
        "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
        max_new_tokens=32,
        metric="qa_f1",
        chat_template=True,
    ),
    LongBenchTask(
        "2wikimqa",
        "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
        max_new_tokens=32,
        metric="qa_f1",
        chat_template=True,
    ),
    LongBenchTask(
        "musique",
        "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
        max_new_tokens=32,
        metric="qa_f1",
        chat_template=True,
    ),
    LongBenchTask(
        "dureader",
        "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：",
        max_new_tokens=128,
        metric="rouge_zh",
        chat_template=True,
    ),
    LongBenchTask(
        "gov_report",
        "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
        max_new_tokens=512,
        metric="rouge",
        chat_template=True,
    ),
    LongBenchTask(
        "qmsum",
        "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:",
        max_new_tokens=512,
        metric="rouge",
        chat_template=True,
    ),
    LongBenchTask(
        "multi_news",
        "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:",
        max_new_tokens=512,
        metric="rouge",
        chat_template=True,
    ),
    LongBenchTask(
        "vcsum",
        "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：",
        max_new_tokens=512,
        metric="rouge_zh",
        chat_template=True,
    ),
    LongBenchTask(
        "trec",
        "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}",
        max_new_tokens=64,
        metric="classification",
        chat_template=False,
    ),
    LongBenchTask(
        "triviaqa",
        "Answer the question based on the given passage. Only give me the answer and do not output any other words. The following are some examples.\n\n{context}\n\n{input}",
        max_new_tokens=32,
        metric="qa_f1",
        chat_template=False,
    ),
    LongBenchTask(
        "samsum",
        "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",
        max_new_tokens=128,
        metric="rouge",
        chat_template=False,
    ),
    LongBenchTask(
        "lsht",
        "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}",
        max_new_tokens=64,
        metric="classification",
        chat_template=False,
    ),
    LongBenchTask(
        "passage_count",
        "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ",
        max_new_tokens=32,
        metric="count",
        chat_template=True,
    ),
    LongBenchTask(
        "passage_retrieval_en",
        'Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is from. The answer format must be like "Paragraph 1", "Paragraph 2", etc.\n\nThe answer is: ',
        max_new_tokens=32,
        metric="retrieval",
        chat_template=True,
    ),
    LongBenchTask(
        "passage_retrieval_zh",
        '以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是"段落1"，"段落2"等格式\n\n答案是：',
        max_new_tokens=32,
        metric="retrieval_zh",
        chat_template=True,
    ),
    LongBenchTask(
        "lcc",
        "Please complete the code given below. \n{context}Next line of code:\n",
        max_new_tokens=64,
        metric="code_sim",
        chat_template=False,
    ),
    LongBenchTask(
        "repobench-p",
        "Please complete the code given below. \n{context}{input}Next line of code:\n",
        max_new_tokens=64,
        metric="code_sim",
        chat_template=False,
    ),
)
TASKS: dict[str, LongBenchTask] = {task.name: task for task in _TASKS}


def task(name: str) -> LongBenchTask:
    if name not in TASKS:
        raise ValueError(f"LongBench task {name!r} is not one of {list(TASKS)}")
    return TASKS[name]


def build_prompt(name: str, record: Mapping[str, Any]) -> str:
    """The full prompt the official code builds for one record (before chat template and truncation)."""
    return task(name).prompt.format(**record)


# The source read from the hub: the SparK paper's pipeline (kvpress) reads this parquet copy of
# the official release, which loads without remote code. THUDM/LongBench itself is a loading-script
# dataset, which ``datasets`` >= 4 refuses. The copy holds the official records of the 16 English
# tasks and their LongBench-E sets (kvpress evaluation/benchmarks/longbench/
# create_huggingface_dataset.py), one folder per task (``<task>/test-*.parquet``), with the prompt
# already cut into context / question / answer_prefix; joined, the parts are the official prompt
# (``to_samples`` checks each record against it). Its max_new_tokens column (official + 20) is unused.
HUB_ID = "Xnhyacinth/LongBench"
HUB_TASKS = (
    "narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "gov_report", "qmsum",
    "multi_news", "trec", "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
)  # fmt: skip
# Hub ids of the official release, whose loading script the pinned ``datasets`` will not run.
SCRIPT_HUB_IDS = ("THUDM/LongBench", "zai-org/LongBench")
HUB_SPLIT = "test"
# The fields of an official record the prompt and the score read, with their JSON types.
RECORD_FIELDS = {"input": str, "context": str, "answers": list}
E_FIELDS = {"length": int}  # LongBench-E: the record's length in words, its bucket
KVPRESS_FIELDS = ("context", "question", "answer_prefix", "answers")


def config_name(name: str, longbench_e: bool = False) -> str:
    """A task's file stem and hub folder: ``hotpotqa``, or ``hotpotqa_e`` for LongBench-E."""
    task(name)
    return f"{name}_e" if longbench_e else name


def local_files(data_dir: str | Path, config: str) -> tuple[Path, Path]:
    """Where ``data_dir`` may hold a task: a folder of the hub copy's parquet files, or the
    official ``<config>.jsonl``."""
    return Path(data_dir) / config, Path(data_dir) / f"{config}.jsonl"


def load_records(
    name: str, data_dir: str | None, longbench_e: bool = False, hub_id: str = HUB_ID
) -> list[dict[str, Any]]:
    """The official records of one task, from ``data_dir`` when it is set, else ``hub_id``.

    ``data_dir`` holds either the official ``<task>[_e].jsonl`` files (the layout of the official
    ``data.zip``) or a download of the hub copy (``<task>[_e]/*.parquet``), which is read with the
    same ``datasets`` call as the hub itself."""
    config = config_name(name, longbench_e)
    what = f"LongBench task {config!r}"
    if data_dir is None:
        hint = hub.fetch_hint(hub_id, "dataset.data_dir=<dir> (or unzip the official data.zip there)")
        return hub.load_records(
            hub_id, what, f"dataset.hub_id={hub_id}", hint, data_dir=config, split=HUB_SPLIT
        )
    folder, path = local_files(data_dir, config)
    if folder.is_dir():
        return hub.load_records(
            str(data_dir), what, f"dataset.data_dir={data_dir}", "", data_dir=config, split=HUB_SPLIT
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"LongBench task {config!r}: {path} does not exist (dataset.data_dir={data_dir})"
        )
    fields = {**RECORD_FIELDS, **(E_FIELDS if longbench_e else {})}
    records = []
    for number, record in files.read_jsonl(path):
        files.check_fields(f"{path}:{number}", record, fields)
        records.append(record)
    return records


def length_bucket(length: int) -> str:
    """LongBench-E's bucket of a record's ``length`` (eval.py scorer_e)."""
    for low, high, label in LONGBENCH_E_BUCKETS:
        if low <= length and (high is None or length < high):
            return label
    raise ValueError(f"length {length} is in no LongBench-E bucket")


def to_samples(name: str, records: list[dict[str, Any]], longbench_e: bool = False) -> list[Sample]:
    """Samples of one task; with ``longbench_e`` each is labelled with its length bucket."""
    spec = task(name)
    samples = []
    for index, record in enumerate(records):
        if "input" not in record and all(f in record for f in KVPRESS_FIELDS):
            head, tail = resplit_hub_record(name, record)
        else:
            head, tail = split_prompt(name, record)
        classes = record.get("all_classes")
        samples.append(
            Sample(
                id=f"{name}/{record.get('_id', index)}",
                task=name,
                context=head,
                question=tail,
                answer_prefix="",
                answers=tuple(record["answers"]),
                max_new_tokens=spec.max_new_tokens,
                chat_template=spec.chat_template,
                all_classes=tuple(classes) if classes is not None and len(classes) else None,
                labels=(length_bucket(int(record["length"])),) if longbench_e else (),
            )
        )
    return samples


def split_prompt(name: str, record: Mapping[str, Any]) -> tuple[str, str]:
    """The prompt cut where the question begins: (everything up to and including the context,
    the rest). Joined they are ``build_prompt``; the first part can be compressed alone."""
    template = task(name).prompt
    cut = template.index("{context}") + len("{context}")
    return template[:cut].format(**record), template[cut:].format(**record)


def resplit_hub_record(name: str, record: Mapping[str, Any]) -> tuple[str, str]:
    """A record of the hub copy as ``split_prompt`` cuts the official one.

    The copy cuts its prompt where the question starts, so its context column ends with part of
    the text the official template puts between ``{context}`` and ``{input}`` (the instruction
    repeated after the document). That part is moved back to the question, so both sources give
    the same samples, and the joined prompt is checked against the official template's fixed
    beginning and end."""
    template = task(name).prompt
    before, after = template.split("{context}")
    between = after.split("{input}")[0]
    ending = after.rsplit("{input}", 1)[-1]
    head, tail = record["context"], record["question"] + record["answer_prefix"]
    if not (head.startswith(before) and (head + tail).endswith(ending)):
        raise ValueError(
            f"LongBench {name} record {record.get('_id')!r}: its prompt is not the official one "
            f"(it should start {before[:40]!r} and end {ending[-40:]!r})"
        )
    for moved in range(min(len(between), len(head)), -1, -1):
        if head.endswith(between[:moved]) and tail.startswith(between[moved:]):
            return head[: len(head) - moved], head[len(head) - moved :] + tail
    raise ValueError(
        f"LongBench {name} record {record.get('_id')!r}: no cut of its prompt fits the official "
        f"template around {between[:40]!r}"
    )
