"""Greedy decoding of several caches as one batch: one forward pass per step for every point.

After a shared prefill (``engine.answer_shared``) each point holds its own cache: other lengths
per layer, dense or SparK-packed. Decoding them one after another reads the model's weights
once per point and step, which is what a GPU's decode time is made of. Here the points' next
tokens go through the model as one batch: the projections and the MLP run batched, and each
attention layer attends row by row, each row over its own cache with the attention function a
run of that point alone uses (``_RowCaches`` updates each point's cache with its row and keeps
the keys and values it returns; ``rows`` attends each). A point leaves the batch when it stops.

A batched matrix product sums in another order than a one-row one, so a point's logits in the
batch differ from its run alone in the last bits. That changes its answer only where two
tokens nearly tie: a row whose chosen token led the runner-up by less than ``tie_margin`` (many
times the largest such difference measured) leaves the batch, and ``engine`` decodes it again
alone from its first logits, so that every answer is the one the point alone gives. A batch of
one is exactly the solo decode (tested).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import kvpress  # noqa: F401  (before ``rows`` is registered: see there)
import torch
from transformers import AttentionInterface, Cache, PreTrainedModel
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

NAME = "spark_bench_rows"
# Logit gaps below which a batched step's choice is not trusted, per dtype: float32's is 55x the
# largest batched-vs-one-row logit difference measured (9e-5 over 1416 steps of the embedded
# model, benchmarks/README.md). In bfloat16 that difference reached 1.16, above a third of all
# gaps: no margin keeps answers exact and the batch worth it, so half precision decodes alone.
TIE_MARGINS = {torch.float32: 0.005}


class _RowCaches:
    """The cache a batched forward pass sees: row ``r`` goes to ``caches[r]``."""

    def __init__(self, caches: Sequence[Cache]):
        self.caches = list(caches)
        self.rows: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def update(self, key_states, value_states, layer_idx, cache_kwargs=None):
        self.rows[layer_idx] = [
            cache.update(key_states[r : r + 1], value_states[r : r + 1], layer_idx, cache_kwargs)
            for r, cache in enumerate(self.caches)
        ]
        return key_states, value_states  # unused: ``rows`` attends each row over its own

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.caches[0].get_seq_length(layer_idx)


# The batch being decoded and the attention function of its rows' solo runs.
_BATCH: ContextVar[tuple[_RowCaches, object]] = ContextVar("spark_bench_rows")


def rows(module, query, key, value, attention_mask, **kwargs):
    """Attention of each row over its own cache, by the solo run's attention function (with no
    mask: one new token attends its whole cache, as a solo decode step does)."""
    batch, inner = _BATCH.get()
    outputs = [
        inner(module, query[r : r + 1], k, v, None, **kwargs)[0]
        for r, (k, v) in enumerate(batch.rows[module.layer_idx])
    ]
    return torch.cat(outputs), None


# Registered after kvpress's import, which wraps every attention function registered by then for
# head-wise presses: wrapped, ``rows`` (one query, one new key) would pass for a prefill and clear
# the masks that each row's own attention function, wrapped itself, must apply.
AttentionInterface.register(NAME, rows)


def _solo_attention(model: PreTrainedModel):
    """The attention function a decode step of ``model`` uses now (eager: its module's own)."""
    name = model.config._attn_implementation
    if name == "eager":
        layer = next(m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "scaling"))
        return sys.modules[type(layer).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[name]


@contextlib.contextmanager
def _batched(model: PreTrainedModel, caches: Sequence[Cache]) -> Iterator[_RowCaches]:
    batch = _RowCaches(caches)
    before = model.config._attn_implementation
    token = _BATCH.set((batch, _solo_attention(model)))
    model.config._attn_implementation = NAME  # the layers read it at each call
    try:
        yield batch
    finally:
        model.config._attn_implementation = before
        _BATCH.reset(token)


def greedy_together(
    model: PreTrainedModel,
    caches: Sequence[Cache],
    first_logits: Sequence[torch.Tensor],
    position: int,
    max_new_tokens: int,
    stops: set[int],
) -> tuple[list[list[int]], list[int]]:
    """Each cache's greedy continuation from its first logits (``[1, 1, vocab]``, after the
    query), the next token at ``position``: ``engine._continue``'s loop, batched over the caches.

    Also returns the rows that met a near-tie: a batched step whose two best logits were
    closer than ``tie_margin(dtype)``, where the batch's rounding could have picked another
    token than the point alone; those rows must be decoded again alone."""
    device = first_logits[0].device
    margin = tie_margin(first_logits[0].dtype)
    generated: list[list[int]] = [[] for _ in caches]
    unsure: set[int] = set()
    tokens = torch.stack([logits[0, -1].argmax() for logits in first_logits])
    close = torch.zeros(len(caches), dtype=torch.bool, device=device)  # the query's logits are exact
    active = list(range(len(caches)))
    for step in range(max_new_tokens):
        # one host sync per step, to stop each row at its end of turn
        ids, ties = tokens.tolist(), close.tolist()
        staying = []
        for row, token_id, tie in zip(active, ids, ties, strict=True):
            if tie:
                unsure.add(row)
            if token_id in stops:
                continue
            generated[row].append(token_id)
            if step + 1 < max_new_tokens and row not in unsure:  # an unsure row is redone anyway
                staying.append((row, token_id))
        if not staying:
            break
        active = [row for row, _ in staying]
        input_ids = torch.tensor([[token_id] for _, token_id in staying], device=device)
        positions = torch.full((len(active), 1), position + step, device=device)
        # A ready 4D mask makes transformers skip building one; ``rows`` attends without it.
        no_mask = torch.zeros(len(active), 1, 1, 1, device=device, dtype=torch.bool)
        with _batched(model, [caches[row] for row in active]) as batch:
            logits = model(
                input_ids=input_ids,
                past_key_values=batch,
                position_ids=positions,
                cache_position=positions[0],
                attention_mask=no_mask,
            ).logits[:, -1]
        best = logits.topk(2, dim=-1).values
        tokens, close = logits.argmax(-1), (best[:, 0] - best[:, 1]) < margin
    return generated, sorted(unsure)


def tie_margin(dtype: torch.dtype) -> float:
    """The smallest gap between a batched step's two best logits trusted to give the token the
    point alone gives (``TIE_MARGINS``); ``batches`` says whether a dtype has one."""
    return TIE_MARGINS[dtype]


def batches(model: PreTrainedModel) -> bool:
    """Whether ``model`` decodes in batches at all: its dtype has a margin (``TIE_MARGINS``),
    and its float32 products run in full float32 as they did where the margin was measured (TF32
    or bf16 inside, as ``torch.set_float32_matmul_precision("high")`` allows, round far more)."""
    return model.dtype in TIE_MARGINS and float32_matmul_precision(model.device) == "ieee"


def float32_matmul_precision(device: torch.device) -> str:
    """How float32 matrix products run on ``device``: "ieee" (full float32), "tf32" or "bf16".
    The most specific of torch's settings that is set (the backend's matmul, the backend, every
    backend) decides; torch without these settings has only the global precision to ask. On
    other devices than the CPU and CUDA, where we have measured nothing: "unknown"."""
    backends = torch.backends
    if device.type not in ("cpu", "cuda"):
        return "unknown"
    if device.type == "cuda":  # torch keeps the CUDA backend's own level under ``cudnn``
        settings = [backends.cuda.matmul, backends.cudnn, backends]
    else:
        settings = [getattr(backends.mkldnn, "matmul", None), backends.mkldnn, backends]
    chosen = [getattr(setting, "fp32_precision", None) for setting in settings]
    if all(choice is None for choice in chosen):  # before torch 2.9
        return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return next((choice for choice in chosen if choice not in (None, "none")), "ieee")
