"""SDPA attention whose causal mask is built from each layer's own key length.

transformers 5.2 builds one causal mask per forward pass, sized from layer 0's cache. Presses
that keep a different number of tokens per layer (PyramidKV) then crash on the first forward
pass after prefill with a size mismatch. This attention function ignores the shared mask and
builds, per layer, the bottom-right aligned causal mask of its own query and key lengths:
every new token sees the whole cached prefix and the new tokens before it. Sequences are not
padded (the runner feeds one sequence at a time), so no padding mask is lost.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers import AttentionInterface
from transformers.models.llama.modeling_llama import repeat_kv

NAME = "sdpa_per_layer"


def sdpa_per_layer(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    if query.shape[0] != 1:
        raise ValueError(f"{NAME} attends one unpadded sequence at a time, got a batch of {query.shape[0]}")
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q_len, k_len = query.shape[2], key.shape[2]
    mask, causal = None, False
    if q_len == k_len:
        causal = q_len > 1  # a prefill: the ordinary causal mask (fused kernels apply)
    elif q_len > 1:  # new tokens after a cached prefix
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(diagonal=k_len - q_len)
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        is_causal=causal,
        scale=scaling,
        dropout_p=dropout if module.training else 0.0,
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa_per_layer)
