"""Prefill a context once with the press active, then answer its questions greedily.

Compression happens at prefill, as in kvpress: the press hooks the attention layers for the
prefill forward pass only. Decoding continues at the positions of the *uncompressed* prompt
(a compressed cache is shorter than the text it stands for), like kvpress's pipeline.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from kvpress import BasePress
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from spark_bench import decode_together, memory
from spark_bench.cache import ChannelSparseCache
from spark_bench.data import Sample
from spark_bench.presses import set_token_budget
from spark_bench.presses.fan_out import FanOutPress, custom_hooks, prefill_attention

# Splits a chat-templated prompt where the user's message ends (the kvpress pipeline's trick):
# everything before it can be compressed, everything after it is fed after compression.
_SEPARATOR = "\x00SPARK_BENCH_SPLIT\x00"


@dataclass(frozen=True)
class Prompt:
    """Token ids: the part prefilled with the press, and one continuation per question."""

    prefill_ids: torch.Tensor  # [1, n]
    query_ids: tuple[torch.Tensor, ...]  # each [1, m], m >= 1


@dataclass(frozen=True)
class Answer:
    text: str
    context_tokens: int  # prefill length before compression
    kv_cache_bytes: int  # bytes the cache held right after the compressed prefill
    kv_cache_dense_bytes: int  # the same prefill, uncompressed
    prefill_s: float  # this answer's share of its prefill (of several points', when shared)
    decode_s: float
    # A prefill shared by several points (``answer_shared``): how many, and this point's own
    # compression within it (its share, as ``prefill_s``); None for a point's own prefill.
    prefill_shared_by: int = 1
    compress_s: float | None = None
    # batch_decode: the answer had a near-tie in the batch, so it was decoded again alone
    decoded_again: bool = False


def prefill_groups(samples: Sequence[Sample], compress_questions: bool) -> Iterator[list[Sample]]:
    """Samples that can share one prefill: same task and context, questions not compressed."""
    if compress_questions:
        for sample in samples:
            yield [sample]
        return
    groups: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.task, sample.context), []).append(sample)
    yield from groups.values()


def _split_chat(
    tokenizer: PreTrainedTokenizerBase, user_text: str, chat_template_kwargs: Mapping[str, Any]
) -> tuple[str, str]:
    templated = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text + _SEPARATOR}],
        add_generation_prompt=True,
        tokenize=False,
        **chat_template_kwargs,
    )
    before, after = templated.split(_SEPARATOR)
    return before, after


def build_prompt_text(
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[Sample],
    compress_questions: bool,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> tuple[str, list[str]]:
    """The text prefilled under compression and the text fed after it, per question.

    With ``compress_questions`` (the paper's setting) the question ends the compressed prompt, so
    the press's observation window sits on it; otherwise it follows compression. Either way the
    question appears once, and the answer prefix comes after the assistant turn opens.
    ``chat_template_kwargs`` go to the model's chat template (``model.chat_template_kwargs``:
    Qwen3 takes ``enable_thinking=False``, else it answers inside a ``<think>`` block).
    """
    context = samples[0].context
    if compress_questions and len(samples) != 1:
        raise ValueError("compress_questions puts each question in its own prefill: pass one sample")
    use_chat = samples[0].chat_template and tokenizer.chat_template is not None
    compressed = context + (samples[0].question if compress_questions else "")
    if use_chat:
        prefill, suffix = _split_chat(tokenizer, compressed, chat_template_kwargs or {})
    else:
        # The raw prompt, as official LongBench feeds these tasks (kvpress would add a "\n").
        prefill, suffix = (tokenizer.bos_token or "") + compressed, ""
    queries = [("" if compress_questions else s.question) + suffix + s.answer_prefix for s in samples]
    return prefill, queries


def encode(
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[Sample],
    compress_questions: bool,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> Prompt:
    prefill, queries = build_prompt_text(tokenizer, samples, compress_questions, chat_template_kwargs)

    def ids(text: str) -> torch.Tensor:
        return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids

    prefill_ids, query_ids = ids(prefill), [ids(q) for q in queries]
    if any(q.shape[1] == 0 for q in query_ids):
        # A raw prompt with its question compressed leaves nothing to feed after the prefill,
        # and the first answer token needs a forward pass: the prompt's last token moves there.
        last, prefill_ids = prefill_ids[:, -1:], prefill_ids[:, :-1]
        query_ids = [torch.cat([last, q], dim=1) for q in query_ids]
    return Prompt(prefill_ids, tuple(query_ids))


def release_memory() -> None:
    """After a failed sample (CUDA out of memory): hand cached blocks back so the next fits."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings cover it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def answer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    press: BasePress | None,
    prompt: Prompt,
    max_new_tokens: Sequence[int],
    kv_budget: int | None = None,
) -> list[Answer]:
    """Prefill ``prompt.prefill_ids`` once under ``press``, then answer each query greedily."""
    device = model.device
    prefill_ids = prompt.prefill_ids.to(device)
    if kv_budget is not None:
        set_token_budget(press, kv_budget, prefill_ids.shape[1])

    cache = ChannelSparseCache()  # a DynamicCache until SparK stores a layer packed
    synchronize(device)
    start = time.perf_counter()
    with press(model) if press is not None else contextlib.nullcontext():
        model.model(input_ids=prefill_ids, past_key_values=cache)  # no lm head over the context
    synchronize(device)
    return _answers(model, tokenizer, cache, prompt, max_new_tokens, time.perf_counter() - start)


@torch.inference_mode()
def prefill_fanned_out(
    model: PreTrainedModel, presses: Sequence[BasePress | None], prefill_ids: torch.Tensor
) -> tuple[list[ChannelSparseCache], list[float]]:
    """One prefill of ``prefill_ids`` from which every press compresses its own cache
    (``presses.fan_out``): the caches, in the presses' order, and each press's compression
    seconds within the prefill."""
    caches = [ChannelSparseCache() for _ in presses]
    fan_out = FanOutPress(presses, caches)
    with fan_out(model):
        model.model(input_ids=prefill_ids, past_key_values=DynamicCache())
    return caches, fan_out.compress_s


@torch.inference_mode()
def answer_shared(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    presses: Sequence[BasePress | None],
    prompt: Prompt,
    max_new_tokens: Sequence[int],
    kv_budgets: Sequence[int | None],
    batch_decode: bool = False,
) -> list[list[Answer]]:
    """``answer`` for several presses from one prefill (``presses.fan_out``): per press, the
    answers ``answer`` gives with it alone. Each press's ``Answer.prefill_s`` is its share of
    the one prefill, which includes every press's compression. The presses must share a
    prefill (``unshareable`` says why not). ``batch_decode``: the presses' caches decode as one
    batch (``decode_together``, float32 models only; each ``decode_s`` is then an equal share of
    the batch's time), else one after another; either way each answer is the one alone."""
    if len(presses) != len(kv_budgets):
        raise ValueError(f"{len(presses)} presses for {len(kv_budgets)} token budgets")
    reason = unshareable(model, presses)
    if reason:
        raise ValueError(f"these presses cannot share a prefill: {reason}")
    device = model.device
    prefill_ids = prompt.prefill_ids.to(device)
    for press, kv_budget in zip(presses, kv_budgets, strict=True):
        if kv_budget is not None:
            set_token_budget(press, kv_budget, prefill_ids.shape[1])

    synchronize(device)
    start = time.perf_counter()
    caches, compress_seconds = prefill_fanned_out(model, presses, prefill_ids)
    synchronize(device)
    prefill_s = time.perf_counter() - start
    if batch_decode and decode_together.batches(model):  # else one by one: exact at any precision
        answers = _answers_together(model, tokenizer, caches, prompt, max_new_tokens, prefill_s)
    else:
        answers = []
        for index in range(len(caches)):
            cache, caches[index] = caches[index], None  # freed once answered
            answers.append(_answers(model, tokenizer, cache, prompt, max_new_tokens, prefill_s))
    questions = len(prompt.query_ids)
    return [
        [replace(a, prefill_shared_by=len(presses), compress_s=compress_s / questions) for a in own]
        for own, compress_s in zip(answers, compress_seconds, strict=True)
    ]


def sharing_sets(model: PreTrainedModel, presses: Sequence[BasePress | None]) -> list[list[int]]:
    """The indices of ``presses`` in sets whose members can share one prefill (``unshareable``),
    in order: the presses of one sweep usually form one set, PyramidKV's another."""
    sets: list[list[int]] = []
    for index, press in enumerate(presses):
        for members in sets:
            if unshareable(model, [presses[i] for i in members] + [press]) is None:
                members.append(index)
                break
        else:
            sets.append([index])
    return sets


def unshareable(model: PreTrainedModel, presses: Sequence[BasePress | None]) -> str | None:
    """Why ``presses`` cannot share one prefill on ``model``, or None when they can: a shared
    prefill must run as each press's solo prefill would (same attention implementation, and
    no press hooking the model its own way)."""
    hooked = [type(p).__name__ for p in presses if custom_hooks(p)]
    if hooked:
        return f"{hooked} hook the model their own way"
    attention = {type(p).__name__ if p else "no press": prefill_attention(model, p) for p in presses}
    if len(set(attention.values())) > 1:
        return f"they prefill with different attention implementations: {attention}"
    return None


def _answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cache: ChannelSparseCache,
    prompt: Prompt,
    max_new_tokens: Sequence[int],
    prefill_s: float,
) -> list[Answer]:
    """Answer each query of ``prompt`` greedily from the prefilled ``cache``."""
    device = model.device
    context_tokens = prompt.prefill_ids.shape[1]
    held = memory.cache_bytes(cache)
    dense = memory.dense_cache_bytes(cache, context_tokens)
    lengths = [layer.get_seq_length() for layer in cache.layers]

    stops = stop_token_ids(model, tokenizer)
    answers = []
    for query_ids, budget in zip(prompt.query_ids, max_new_tokens, strict=True):
        synchronize(device)
        start = time.perf_counter()
        generated = _greedy(model, cache, query_ids.to(device), context_tokens, budget, stops)
        text = tokenizer.decode(generated, skip_special_tokens=True)
        synchronize(device)
        decode_s = time.perf_counter() - start
        for layer, length in zip(cache.layers, lengths, strict=True):
            layer.crop(length)  # forget this answer before the next question
        answers.append(Answer(text, context_tokens, held, dense, prefill_s / len(prompt.query_ids), decode_s))
    return answers


def _answers_together(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    caches: list[ChannelSparseCache],
    prompt: Prompt,
    max_new_tokens: Sequence[int],
    prefill_s: float,
) -> list[list[Answer]]:
    """``_answers`` for several caches, decoding them as one batch (``decode_together``)."""
    device = model.device
    context_tokens = prompt.prefill_ids.shape[1]
    held = [memory.cache_bytes(cache) for cache in caches]
    dense = [memory.dense_cache_bytes(cache, context_tokens) for cache in caches]
    lengths = [[layer.get_seq_length() for layer in cache.layers] for cache in caches]

    stops = stop_token_ids(model, tokenizer)
    answers: list[list[Answer]] = [[] for _ in caches]
    for query_ids, budget in zip(prompt.query_ids, max_new_tokens, strict=True):
        synchronize(device)
        start = time.perf_counter()
        query_ids = query_ids.to(device)
        first = [_query_logits(model, cache, query_ids, context_tokens) for cache in caches]
        position = context_tokens + query_ids.shape[1]
        tokens, unsure = decode_together.greedy_together(model, caches, first, position, budget, stops)
        for index in unsure:  # a near-tie the batch's rounding could have decided: this point alone
            _crop(caches[index], lengths[index], query_ids.shape[1])
            tokens[index] = _continue(model, caches[index], first[index], position, budget, stops)
        synchronize(device)
        decode_s = (time.perf_counter() - start) / len(caches)
        for index, cache in enumerate(caches):
            _crop(cache, lengths[index])  # forget this answer before the next question
            text = tokenizer.decode(tokens[index], skip_special_tokens=True)
            share = prefill_s / len(prompt.query_ids)
            answer = Answer(text, context_tokens, held[index], dense[index], share, decode_s)
            answers[index].append(replace(answer, decoded_again=index in unsure))
    return answers


def _crop(cache: ChannelSparseCache, lengths: Sequence[int], more: int = 0) -> None:
    """Cut each layer of ``cache`` back to its length in ``lengths``, plus ``more`` tokens."""
    for layer, length in zip(cache.layers, lengths, strict=True):
        layer.crop(length + more)


def _query_logits(
    model: PreTrainedModel, cache: ChannelSparseCache, query_ids: torch.Tensor, position: int
) -> torch.Tensor:
    """The logits (``[1, 1, vocab]``) after feeding a question's tokens from ``position`` on."""
    positions = torch.arange(position, position + query_ids.shape[1], device=query_ids.device).unsqueeze(0)
    return model(input_ids=query_ids, past_key_values=cache, position_ids=positions, logits_to_keep=1).logits


def _greedy(
    model: PreTrainedModel,
    cache: ChannelSparseCache,
    query_ids: torch.Tensor,
    position: int,
    max_new_tokens: int,
    stops: set[int],
) -> list[int]:
    """The greedy answer's token ids after ``query_ids``, fed from ``position`` on."""
    logits = _query_logits(model, cache, query_ids, position)
    return _continue(model, cache, logits, position + query_ids.shape[1], max_new_tokens, stops)


def _continue(
    model: PreTrainedModel,
    cache: ChannelSparseCache,
    logits: torch.Tensor,
    next_position: int,
    max_new_tokens: int,
    stops: set[int],
) -> list[int]:
    """Greedy tokens from ``logits`` on, each fed back at ``next_position`` and after."""
    generated: list[int] = []
    for step in range(max_new_tokens):
        token = logits[0, -1].argmax()
        token_id = int(token)  # one host sync per generated token, to stop at end of turn
        if token_id in stops:
            break
        generated.append(token_id)
        if step + 1 == max_new_tokens:
            break
        positions = torch.tensor([[next_position + step]], device=logits.device)
        logits = model(input_ids=token.view(1, 1), past_key_values=cache, position_ids=positions).logits
    return generated
