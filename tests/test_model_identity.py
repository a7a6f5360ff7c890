"""A run's model is named for what was loaded: a checkpoint override is not filed under the
preset's name (two checkpoints never share a run directory, a results row or a report row)."""

from __future__ import annotations

import json

import pytest

from spark_bench import paths
from spark_bench.config import validate
from spark_bench.models import load_model
from spark_bench.report import main as report_main
from spark_bench.runner import run
from tests.helpers import compose_config


@pytest.mark.parametrize(
    ("overrides", "label"),
    [
        ([], "llama3.1-8b"),
        (["model.pretrained=meta-llama/Llama-3.1-8B-Instruct"], "llama3.1-8b"),  # the preset's own
        (["model.pretrained=my-org/Llama-3.1-8B-longctx"], "llama3.1-8b@my-org--Llama-3.1-8B-longctx"),
        (["model.pretrained=/scratch/ckpts/llama-ft-step900/"], "llama3.1-8b@llama-ft-step900"),
        (
            ["model.pretrained=/hf/hub/models--meta-llama--Llama-3.1-8B-Instruct/snapshots/0e9e39f"],
            "llama3.1-8b@models--meta-llama--Llama-3.1-8B-Instruct",
        ),
        (["model.pretrained=/ckpt/odd name:v2"], "llama3.1-8b@odd-name-v2"),
    ],
)
def test_the_model_label_follows_the_loaded_checkpoint(overrides, label):
    spec = validate(compose_config(["model=llama3.1-8b", *overrides]))
    assert spec.model == label
    assert f"/{label}/" in str(paths.run_dir("results", spec)) and f"-{label}-" in paths.run_name(spec)


def test_presets_and_test_models_keep_their_names():
    assert validate(compose_config(["model=qwen3-8b"])).model == "qwen3-8b"
    assert validate(compose_config(["model=tiny-llama", "+model.pretrained=anything"])).model == "tiny-llama"
    assert validate(compose_config(["model=smollm2-135m"])).model == "smollm2-135m"


def test_a_local_checkpoint_run_under_a_preset_is_labelled_by_that_checkpoint(tmp_path, make_config):
    """The hub loader reading a local directory, as offline clusters run it: results.json and the
    report name the checkpoint, and the preset's own runs stay apart."""
    tiny = load_model(compose_config(["model=tiny-llama"]).model)
    checkpoint = tmp_path / "llama-ft"
    tiny.model.save_pretrained(checkpoint)
    tiny.tokenizer.save_pretrained(checkpoint)
    results = run(
        make_config(
            "model=llama3.1-8b",
            f"model.pretrained={checkpoint}",
            "model.dtype=float32",
            "model.device_map=null",
            "press=snapkv",
        )
    )
    assert results["run"]["model"] == "llama3.1-8b@llama-ft"
    (written,) = (tmp_path / "results").glob("*/*/snapkv/*/results.json")
    assert written.parts[-4] == "llama3.1-8b@llama-ft"
    assert json.loads(written.read_text())["run"]["model"] == "llama3.1-8b@llama-ft"
    assert report_main([str(tmp_path / "results"), "--out", str(tmp_path / "report")]) == 0
    assert "llama3.1-8b@llama-ft" in (tmp_path / "report" / "report.md").read_text()
