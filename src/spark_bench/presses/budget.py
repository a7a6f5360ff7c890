"""Turn a press config into a press, and a token budget into the ratio kvpress presses take.

kvpress token presses evict a fraction (``compression_ratio``) of the prefill; the paper's
LongBench budgets keep an absolute number of tokens per head (128 ... 2048). The runner calls
``set_token_budget`` before each prefill, so every context keeps ``kv_budget`` tokens.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from kvpress import BasePress, ComposedPress, ScorerPress
from omegaconf import OmegaConf

from spark_bench import knobs

# Attributes through which kvpress wrappers hold the press they wrap.
_WRAPPED = ("press", "base_press")


def build_press(press_cfg: Any) -> BasePress | None:
    """A fresh press from its config node; None for ``no_press`` (a node without ``_target_``)."""
    if press_cfg is None or "_target_" not in press_cfg:
        return None
    fields = OmegaConf.to_container(press_cfg, resolve=True)
    fields.pop(knobs.PRESS_KEY, None)  # the knobs the press reads: a declaration, not a field
    return instantiate(fields)


def token_presses(press: BasePress | None) -> list[ScorerPress]:
    """The token-evicting presses inside ``press`` (itself, composed parts, wrapped presses)."""
    if press is None:
        return []
    if isinstance(press, ScorerPress):
        return [press]
    if isinstance(press, ComposedPress):
        return [p for part in press.presses for p in token_presses(part)]
    for attr in _WRAPPED:
        inner = getattr(press, attr, None)
        if isinstance(inner, BasePress):
            return token_presses(inner)
    return []


def budget_ratio(kv_budget: int, num_tokens: int) -> float:
    """The compression ratio that keeps ``kv_budget`` of ``num_tokens`` prefill tokens.

    kvpress keeps ``int(num_tokens * (1 - ratio))`` tokens; aiming at ``kv_budget + 0.5``
    makes that floor land on ``kv_budget`` exactly, whatever the float rounding.
    """
    if kv_budget >= num_tokens:
        return 0.0
    return 1.0 - (kv_budget + 0.5) / num_tokens


def set_token_budget(press: BasePress | None, kv_budget: int, num_tokens: int) -> None:
    """Set every token press inside ``press`` to keep ``kv_budget`` tokens of this prefill."""
    ratio = budget_ratio(kv_budget, num_tokens)
    for part in token_presses(press):
        part.compression_ratio = ratio
