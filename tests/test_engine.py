"""Prompt splitting around compression, and prefill-once answering."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kvpress import SnapKVPress
from omegaconf import OmegaConf

from spark_bench import engine
from spark_bench.data import Sample
from spark_bench.engine import prefill_groups
from spark_bench.models import embedded_tokenizer, load_model
from spark_bench.runner import run
from tests.helpers import compose_config


def sample(
    question: str = "Which?",
    context: str = "Some long context.\n",
    chat: bool = True,
    prefix: str = " Answer:",
) -> Sample:
    return Sample("t/0", "t", context, question, prefix, ("x",), 8, chat)


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


def test_the_question_is_compressed_or_fed_after_but_appears_once(tokenizer):
    s = sample(question="What is the magic number?")
    pre_c, (query_c,) = engine.build_prompt_text(tokenizer, [s], compress_questions=True)
    pre_n, (query_n,) = engine.build_prompt_text(tokenizer, [s], compress_questions=False)
    assert pre_c + query_c == pre_n + query_n  # the same prompt, split at another point
    assert (pre_c + query_c).count(s.question) == 1
    assert pre_c.endswith(s.context + s.question) and query_c == "<|im_end|>\n<|im_start|>assistant\n Answer:"
    assert pre_n.endswith(s.context) and query_n.startswith(s.question)
    assert pre_c.startswith("<|im_start|>system\n")


def test_without_chat_template_the_raw_prompt_is_used(tokenizer):
    pre, (query,) = engine.build_prompt_text(tokenizer, [sample(chat=False)], compress_questions=True)
    assert pre == tokenizer.bos_token + "Some long context.\nWhich?"
    assert query == " Answer:"  # the raw prompt, nothing added


def test_a_raw_prompt_with_nothing_after_it_feeds_its_last_token_after_prefill(tokenizer):
    raw = sample(chat=False, prefix="")
    whole = tokenizer(tokenizer.bos_token + raw.context + raw.question, add_special_tokens=False).input_ids
    prompt = engine.encode(tokenizer, [raw], compress_questions=True)
    (query,) = prompt.query_ids
    assert query.shape[1] == 1
    assert prompt.prefill_ids[0].tolist() + query[0].tolist() == whole


def test_encoding_adds_no_special_tokens(tokenizer):
    prompt = engine.encode(tokenizer, [sample()], compress_questions=True)
    assert prompt.prefill_ids.shape[0] == 1 and prompt.prefill_ids[0, 0] == tokenizer.convert_tokens_to_ids(
        "<|im_start|>"
    )
    assert (
        prompt.prefill_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    ).sum() == 2  # system + user
    assert all(q.shape[1] >= 1 for q in prompt.query_ids)


def test_compressed_questions_cannot_share_a_prefill(tokenizer):
    with pytest.raises(ValueError, match="one sample"):
        engine.build_prompt_text(tokenizer, [sample(), sample()], compress_questions=True)


def test_grouping_shares_a_context_only_when_questions_are_not_compressed():
    a, b, c = sample("q1"), sample("q2"), sample("q3", context="Another context.\n")
    assert list(prefill_groups([a, b, c], compress_questions=True)) == [[a], [b], [c]]
    assert list(prefill_groups([a, b, c], compress_questions=False)) == [[a, b], [c]]


def test_one_prefill_answers_each_question_as_if_alone():
    loaded = load_model(compose_config(["model=tiny-llama"]).model)
    context = "word " * 200 + "\n"
    questions = ["Why?", "Which colour has the sky over the sea at noon in summer?", "Name 3 digits: 7 8 9"]
    samples = [sample(q, context=context) for q in questions]
    press = SnapKVPress(compression_ratio=0.5, window_size=8)
    together = engine.answer(
        loaded.model, loaded.tokenizer, press, engine.encode(loaded.tokenizer, samples, False), [6, 6, 6]
    )
    alone = [
        engine.answer(
            loaded.model, loaded.tokenizer, press, engine.encode(loaded.tokenizer, [s], False), [6]
        )[0]
        for s in samples
    ]
    assert [a.text for a in together] == [a.text for a in alone]
    assert len({a.text for a in together}) > 1  # the questions really differ in effect
    first = together[0]
    assert first.kv_cache_bytes < first.kv_cache_dense_bytes
    assert first.context_tokens == engine.encode(loaded.tokenizer, samples, False).prefill_ids.shape[1]


@torch.inference_mode()
def test_decoding_continues_at_the_uncompressed_positions():
    loaded = load_model(compose_config(["model=tiny-llama"]).model)
    prompt = engine.encode(loaded.tokenizer, [sample(context="word " * 100)], True)
    full = torch.cat([prompt.prefill_ids, prompt.query_ids[0]], dim=1)
    # greedy with no press must equal plain greedy decoding of the whole prompt
    expected = loaded.model.generate(full, max_new_tokens=5, do_sample=False, eos_token_id=None)
    answer = engine.answer(loaded.model, loaded.tokenizer, None, prompt, [5])[0]
    assert answer.text == loaded.tokenizer.decode(expected[0, full.shape[1] :], skip_special_tokens=True)


# Qwen3's chat template, the ``chat_template`` string of Qwen/Qwen3-8B's tokenizer_config.json on
# the hub (the current revision, with ``reasoning_content``), decoded from its JSON: a fixture, so
# that Qwen3's prompts are checked without downloading its tokenizer.
QWEN3_TEMPLATE = Path(__file__).parent / "data" / "qwen3_chat_template.jinja"
OPEN_THINKING = "<|im_start|>assistant\n"
CLOSED_THINKING = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.fixture
def qwen3_tokenizer():
    """A tokenizer that renders prompts with Qwen3's real chat template."""
    tokenizer = embedded_tokenizer()
    tokenizer.chat_template = QWEN3_TEMPLATE.read_text()
    return tokenizer


@pytest.mark.parametrize("compress_questions", [True, False])
def test_qwen3_answers_with_thinking_off_as_the_reference_renders_it(qwen3_tokenizer, compress_questions):
    """The SparK reference and kvpress render Qwen3 prompts with ``enable_thinking=False``: the
    assistant turn opens with an empty, closed think block, so the answer is not spent thinking."""
    kwargs = OmegaConf.to_container(compose_config(["model=qwen3-8b"]).model.chat_template_kwargs)
    s = sample(question="What is the magic number?")
    prefill, (query,) = engine.build_prompt_text(qwen3_tokenizer, [s], compress_questions, kwargs)
    reference = qwen3_tokenizer.apply_chat_template(
        [{"role": "user", "content": s.context + s.question}],
        add_generation_prompt=True,
        tokenize=False,
        enable_thinking=False,
    )
    assert prefill + query == reference + s.answer_prefix
    assert query.endswith(CLOSED_THINKING + s.answer_prefix)
    assert (prefill + query).count("<think>") == 1


def test_without_its_arguments_qwen3_would_think_first(qwen3_tokenizer):
    prefill, (query,) = engine.build_prompt_text(qwen3_tokenizer, [sample()], compress_questions=True)
    assert query.endswith(OPEN_THINKING + " Answer:") and "<think>" not in prefill + query


def test_the_runner_renders_with_the_models_chat_template_arguments(make_config, monkeypatch):
    seen = []
    real_encode = engine.encode
    monkeypatch.setattr(engine, "encode", lambda *args: seen.append(args[3]) or real_encode(*args))
    run(make_config("press=snapkv", "+model.chat_template_kwargs={enable_thinking:false}"))
    assert seen and all(kwargs == {"enable_thinking": False} for kwargs in seen)
