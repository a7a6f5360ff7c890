"""Jobs of one model in one process (Hydra's basic launcher, a notebook) load it once."""

from __future__ import annotations

import pytest

from spark_bench import models
from spark_bench.runner import run
from tests.helpers import compose_config, read_jsonl, run_py


def test_the_same_model_is_loaded_once_and_another_replaces_it():
    spec = compose_config(["model=tiny-llama"]).model
    first = models.load_model_once(spec)
    resized = compose_config(["model=tiny-llama", "model.resources.mem_gb=64", "model.max_prompt_tokens=100"])
    assert models.load_model_once(resized.model) is first  # sizing and prompt cut load nothing new
    reseeded = models.load_model_once(compose_config(["model=tiny-llama", "model.init_seed=1"]).model)
    assert reseeded is not first
    assert len(models._REUSABLE) == 1  # the first was released, not kept beside the second
    assert not all(
        (a == b).all() for a, b in zip(first.model.parameters(), reseeded.model.parameters(), strict=True)
    )


def test_consecutive_runs_of_one_model_share_it(make_config, monkeypatch):
    loads = []
    real_load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda spec: loads.append(spec["name"]) or real_load(spec))
    models._REUSABLE.clear()
    run(make_config("model=tiny-llama", "press=snapkv"))
    run(make_config("model=tiny-llama", "press=snap_spark", "key_ratio=0.5"))
    assert loads == ["tiny-llama"]


def _answers(results_root) -> list[tuple[str, str]]:
    (path,) = results_root.glob("**/predictions.jsonl")
    return [(r["id"], r["prediction"]) for r in read_jsonl(path)]


def test_a_press_that_switches_attention_leaves_the_next_job_a_model_as_loaded(make_config, tmp_path):
    """PyramidKV switches the model to per-layer attention; a later job reusing the model must
    run exactly as on a fresh load (job order cannot change results)."""
    models._REUSABLE.clear()
    alone = make_config("press=snapkv", "compression_ratio=0.5", f"paths.results_root={tmp_path / 'alone'}")
    run(alone)
    models._REUSABLE.clear()
    run(make_config("press=pyramidkv", "compression_ratio=0.5", f"paths.results_root={tmp_path / 'first'}"))
    after = make_config("press=snapkv", "compression_ratio=0.5", f"paths.results_root={tmp_path / 'after'}")
    loaded = models.load_model_once(after.model)
    assert loaded.model.config._attn_implementation == after.model.attn_implementation
    run(after)
    assert _answers(tmp_path / "after") == _answers(tmp_path / "alone")


@pytest.mark.subprocess
@pytest.mark.parametrize("share_prefill", [False, True])
def test_in_one_multirun_snapkv_after_pyramidkv_answers_as_snapkv_alone(tmp_path, share_prefill):
    """Two jobs of one process, or one job answering both points (PyramidKV's prefill first)."""
    common = ["model=tiny-llama", "logger=none", "max_samples=2", "max_new_tokens=4",
              "dataset.context_length=512", "compression_ratio=0.5"]  # fmt: skip
    multirun = run_py("-m", *common, "press=pyramidkv,snapkv", f"paths.results_root={tmp_path / 'both'}",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}",
                      f"hydra.sweeper.share_prefill={share_prefill}")  # fmt: skip
    assert multirun.returncode == 0, multirun.stderr[-2000:]
    alone = run_py(*common, "press=snapkv", f"paths.results_root={tmp_path / 'alone'}",
                   f"hydra.run.dir={tmp_path / 'hydra'}")  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-2000:]
    (snapkv_job_log,) = (tmp_path / "sweep" / ("0" if share_prefill else "1")).glob("*.log")
    assert "model attention back to sdpa" in snapkv_job_log.read_text()
    assert _answers(tmp_path / "both" / "ruler" / "tiny-llama" / "snapkv") == _answers(tmp_path / "alone")
