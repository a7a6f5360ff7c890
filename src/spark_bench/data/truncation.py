"""Official middle truncation: a prompt longer than the model takes loses its middle, by tokens.

LongBench's ``pred.py`` keeps the first and the last ``max_length / 2`` tokens of the whole
prompt ("truncate in the middle, since the left and right side may contain crucial
instructions"). The cut falls in the context; the question and answer prefix stay whole.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from transformers import PreTrainedTokenizerBase

from spark_bench.data.sample import Sample

log = logging.getLogger(__name__)


class PromptTooLong(ValueError):
    """A question (with its answer prefix) longer than the half of the prompt that keeps it."""


def truncate_middle(
    tokenizer: PreTrainedTokenizerBase, sample: Sample, max_tokens: int
) -> tuple[Sample, bool]:
    """``sample`` with the middle of its prompt cut to ``max_tokens`` tokens; whether it was cut."""

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False, verbose=False)

    context = ids(sample.context)
    rest = len(ids(sample.question + sample.answer_prefix))
    if len(context) + rest <= max_tokens:
        return sample, False
    half = max_tokens // 2
    if rest > half:
        raise PromptTooLong(
            f"model.max_prompt_tokens={max_tokens}: the question of sample {sample.id} has {rest} tokens, "
            f"over half of it (the cut keeps the question in the last half): set it to {2 * rest} or more"
        )
    kept = tokenizer.decode(context[:half], skip_special_tokens=True) + tokenizer.decode(
        context[len(context) - (max_tokens - half - rest) :], skip_special_tokens=True
    )
    return replace(sample, context=kept), True


def truncate_all(tokenizer: PreTrainedTokenizerBase, samples: list[Sample], max_tokens: int) -> list[Sample]:
    """``truncate_middle`` on every sample, said once per run with how many prompts it cut."""
    out, cut = [], 0
    for sample in samples:
        sample, truncated = truncate_middle(tokenizer, sample, max_tokens)
        out.append(sample)
        cut += truncated
    if cut:
        log.warning(
            "%d of %d prompts exceed model.max_prompt_tokens=%d: their middle is cut",
            cut,
            len(out),
            max_tokens,
        )
    return out
