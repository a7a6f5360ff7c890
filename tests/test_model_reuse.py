"""Jobs of one model in one process (Hydra's basic launcher, a notebook) load it once."""

from __future__ import annotations

from spark_bench import models
from spark_bench.runner import run
from tests.conftest import compose_config


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
