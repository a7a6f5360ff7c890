"""Context grouping: questions that share a context prefilled once, against once per question.

    python benchmarks/grouping.py                      # 2 contexts x 4 questions, median of 5
    python benchmarks/grouping.py --quick --json out.json

A LongBench-like fixture: RULER niah_single_1 contexts (generated here, no download), each asked
several questions (its own and the other contexts', as a multi-question document set asks
several things about one text). With the question after compression (``compress_questions=false``,
kvpress's pipeline setting), the runner answers every question of a context from one prefill
(``engine.prefill_groups``); without grouping, each question pays for its own prefill. Both sides
go through the engine exactly as the runner calls it; the answers must be identical.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace

from spark_bench import engine, tasks
from spark_bench.benchmarking import (
    argument_parser,
    compose_config,
    interleaved_times,
    paired_ratio,
    write_figures,
)
from spark_bench.data import Sample
from spark_bench.engine import prefill_groups
from spark_bench.models import LoadedModel, load_model_once
from spark_bench.presses import build_press

COMPRESSION_RATIO = 0.5


def fixture(loaded: LoadedModel, contexts: int, questions: int, context_tokens: int) -> list[Sample]:
    """``contexts`` x ``questions`` samples; the samples of a context differ only in the question."""
    cfg = compose_config(
        [
            "dataset=ruler",
            "dataset.tasks=[niah_single_1]",
            f"dataset.context_length={context_tokens}",
            f"dataset.num_samples={max(contexts, questions)}",
        ]
    )
    generated = tasks.get(cfg.dataset.name).samples(cfg.dataset, loaded.tokenizer, cfg.seed, None)
    return [
        replace(
            base,
            id=f"{base.id}/q{q}",
            question=generated[q].question,
            answers=generated[q].answers,
        )
        for base in generated[:contexts]
        for q in range(questions)
    ]


def answer_groups(
    loaded: LoadedModel, press, groups: Sequence[list[Sample]], texts: list[str]
) -> Callable[[], None]:
    """Answer each group from one prefill, as the runner does; the answers land in ``texts``."""

    def answer_all() -> None:
        texts.clear()
        for group in groups:
            prompt = engine.encode(loaded.tokenizer, group, compress_questions=False)
            lengths = [s.max_new_tokens for s in group]
            answers = engine.answer(loaded.model, loaded.tokenizer, press, prompt, lengths)
            texts.extend(a.text for a in answers)

    return answer_all


def main(argv: list[str] | None = None) -> dict:
    args = argument_parser("prefill once per context vs once per question").parse_args(argv)
    contexts, questions, context_tokens, repeats = (1, 3, 1024, 3) if args.quick else (2, 4, 2048, 5)
    cfg = compose_config(["model=smollm2-135m", "press=snapkv", f"compression_ratio={COMPRESSION_RATIO}"])
    loaded = load_model_once(cfg.model)
    press = build_press(cfg.press)
    samples = fixture(loaded, contexts, questions, context_tokens)

    grouped_texts: list[str] = []
    single_texts: list[str] = []
    by_context = list(prefill_groups(samples, compress_questions=False))
    grouped = answer_groups(loaded, press, by_context, grouped_texts)
    per_question = answer_groups(loaded, press, [[s] for s in samples], single_texts)
    grouped_s, single_s = interleaved_times([grouped, per_question], repeats, loaded.device)
    speedup = paired_ratio(single_s, grouped_s)
    same = grouped_texts == single_texts
    print(f"{contexts} context(s) x {questions} questions, {context_tokens} tokens, median of {repeats}")
    print(f"  one prefill per question  {statistics.median(single_s):8.2f} s")
    print(f"  one prefill per context   {statistics.median(grouped_s):8.2f} s   speedup x{speedup:.2f}")
    print(f"  identical answers: {same}")
    figures = {
        "grouping_speedup": round(speedup, 4),
        "grouping_questions_per_context": questions,
        "grouping_identical_answers": same,
    }
    write_figures(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
