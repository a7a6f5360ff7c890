"""The embedded SmolLM2 default: tokenizer repair, chat stopping, and the default run end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from spark_bench import engine
from spark_bench.data import Sample
from spark_bench.models import (
    EMBEDDED_VOCAB_SIZE,
    embedded_gguf_path,
    embedded_model_dir,
    embedded_tokenizer,
    load_model,
    repair_embedded_tokenizer,
)
from tests.helpers import ROOT, compose_config


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


def test_gguf_tokenizer_has_the_defects_the_repair_removes():
    gguf = embedded_gguf_path()
    raw = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert raw.eos_token == "<|im_start|>" and raw("Hi").input_ids[0] == raw.bos_token_id
    assert len(raw) > EMBEDDED_VOCAB_SIZE
    fixed = repair_embedded_tokenizer(raw)
    assert fixed.eos_token == "<|im_end|>" and fixed.bos_token == "<|im_start|>"
    assert fixed("Hi").input_ids == raw("Hi").input_ids[1:]
    assert len(fixed) == EMBEDDED_VOCAB_SIZE


def test_repaired_tokenizer_reloads_intact(tokenizer):
    reloaded = AutoTokenizer.from_pretrained(embedded_model_dir())
    for tok in (tokenizer, reloaded):
        assert tok("Hello world").input_ids == [19556, 905]  # no spurious BOS
        assert (tok.eos_token, tok.eos_token_id, tok.bos_token_id) == ("<|im_end|>", 2, 1)
        assert len(tok) == EMBEDDED_VOCAB_SIZE
        text = "Numbers 1234567, a ▁ mark, ünïcode\n\nand <|im_end|>"
        assert tok.decode(tok(text).input_ids) == text
        assert max(tok(text + " <FILL_ME> ▁<PRE>").input_ids) < EMBEDDED_VOCAB_SIZE


@pytest.mark.slow
def test_chat_generation_stops_at_end_of_turn():
    loaded = load_model(compose_config([]).model)
    assert loaded.model.generation_config.eos_token_id == loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    sample = Sample("q/0", "q", "What is the capital of France?", "", "", ("Paris",), 64)
    prompt = engine.encode(loaded.tokenizer, [sample], compress_questions=True)
    (answer,) = engine.answer(loaded.model, loaded.tokenizer, None, prompt, [64])
    assert "Paris" in answer.text
    ids = loaded.tokenizer(answer.text).input_ids
    assert len(ids) < 30  # stopped at <|im_end|>, far before the 64-token limit
    # and transformers' own generate stops there too
    full = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": sample.context}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = loaded.model.generate(**full, max_new_tokens=64, do_sample=False)
    assert out[0, -1] == 2 and out.shape[1] - full["input_ids"].shape[1] < 30


@pytest.mark.slow
def test_default_run_end_to_end(tmp_path):
    """`python run.py` with its defaults (W&B offline included), shrunk to a few samples."""
    proc = subprocess.run(
        [
            sys.executable,
            "run.py",
            "max_samples=3",
            f"paths.results_root={tmp_path}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = list(tmp_path.rglob("results.json"))
    results = json.loads(path.read_text())
    assert results["run"]["model"] == "smollm2-135m" and results["run"]["n_samples"] == 6
    memory = results["memory"]
    assert 0 < memory["kv_cache_bytes"] < memory["kv_cache_dense_bytes"]
    # needles at ~2k tokens under SnapKV: chance is ~0 for a 7-digit number
    assert results["scores"]["average"] >= 50, results["scores"]
    assert list(path.parent.glob("wandb/offline-run-*")), "the default logger writes an offline W&B run"


@pytest.mark.slow
def test_sparse_cache_gives_identical_greedy_outputs(monkeypatch):
    """On the embedded model, the channel-sparse cache answers exactly as the dense keys would."""
    from kvpress import ComposedPress, SnapKVPress
    from transformers import DynamicCache

    from spark_bench.data import ruler
    from spark_bench.presses.spark import SparKPress

    loaded = load_model(compose_config([]).model)

    def count(text: str) -> int:
        return len(loaded.tokenizer.encode(text, add_special_tokens=False, verbose=False))

    samples = ruler.generate("niah_single_1", 2, 1024, count, seed=0)
    press = ComposedPress([SnapKVPress(compression_ratio=0.1, window_size=32), SparKPress(key_ratio=0.8)])
    outputs = {}
    for cache in ("sparse", "dense"):
        if cache == "dense":
            monkeypatch.setattr(engine, "ChannelSparseCache", DynamicCache)
        answers = [
            engine.answer(
                loaded.model, loaded.tokenizer, press, engine.encode(loaded.tokenizer, [s], True), [24]
            )[0]
            for s in samples
        ]
        outputs[cache] = answers
    assert [a.text for a in outputs["sparse"]] == [a.text for a in outputs["dense"]]
    assert all(
        s.kv_cache_bytes < 0.7 * d.kv_cache_bytes
        for s, d in zip(outputs["sparse"], outputs["dense"], strict=True)
    )
