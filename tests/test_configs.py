"""Every model x press x dataset composes and validates; bad configs fail before a model loads."""

from __future__ import annotations

import pytest
from hydra.errors import MissingConfigException
from omegaconf import open_dict

from spark_bench import knobs
from spark_bench.config import ConfigError, effective_config, interpolated_knobs, press_knobs, validate
from spark_bench.presses import build_press
from spark_bench.presses.budget import token_presses
from tests.helpers import ROOT, compose_config, group_choices

MODELS = group_choices("model")
PRESSES = group_choices("press")
DATASETS = group_choices("dataset")


def test_the_groups_the_issue_names_exist():
    assert {
        "smollm2-135m",
        "llama3.1-8b",
        "llama3-8b",
        "qwen3-8b",
        "mistral-7b",
        "tiny-llama",
        "tiny-qwen3",
    } <= set(MODELS)
    assert {"no_press", "snapkv", "streaming_llm"} <= set(PRESSES)
    assert "ruler" in DATASETS
    assert {"none", "wandb"} <= set(group_choices("logger"))


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("press", PRESSES)
@pytest.mark.parametrize("model", MODELS)
def test_every_combination_composes_and_validates(model, press, dataset):
    cfg = compose_config([f"model={model}", f"press={press}", f"dataset={dataset}"])
    spec = validate(cfg)
    assert (spec.model, spec.press, spec.dataset) == (model, press, dataset)
    assert len(spec.config_hash) == 12


@pytest.mark.parametrize("press", PRESSES)
def test_every_press_builds_without_a_model(press):
    built = build_press(compose_config([f"press={press}"]).press)
    assert (built is None) == (press == "no_press")


def test_model_configs_carry_what_the_loader_needs():
    for model in MODELS:
        node = compose_config([f"model={model}"]).model
        assert node.name == model
        assert node.loader in {"hub", "embedded", "random"}
        assert node.dtype in {"float32", "bfloat16", "float16"}
        if node.loader == "hub":
            assert "/" in node.pretrained


def test_llama31_is_the_papers_instruct_model():
    assert compose_config(["model=llama3.1-8b"]).model.pretrained == "meta-llama/Llama-3.1-8B-Instruct"


def test_press_knobs_are_what_the_press_config_declares():
    def reads(press):
        return set(press_knobs(compose_config([f"press={press}"]).press, press))

    assert reads("snapkv") == {"compression_ratio", "kv_budget", "token_window"}
    assert reads("streaming_llm") == {"compression_ratio", "kv_budget"}
    assert reads("no_press") == set()
    assert reads("observed_attention") == {"compression_ratio", "kv_budget"}  # a @package _global_ press


@pytest.mark.parametrize("press", sorted(p.stem for p in (ROOT / "conf" / "press").glob("*.yaml")))
def test_every_press_declares_exactly_the_knobs_it_interpolates(press):
    cfg = compose_config([f"press={press}"])
    assert set(press_knobs(cfg.press, press)) == interpolated_knobs(cfg.press)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda press: press.pop("knobs"), r"press snapkv: its config must list the knobs it reads"),
        (lambda press: press.knobs.append("sink_tokens"), r"knobs lists unknown \['sink_tokens'\]"),
        # reading a knob it does not declare would leave it out of the run's identity
        (
            lambda press: press.knobs.remove("token_window"),
            r"knobs lists .* but its config reads .*token_window",
        ),
        (lambda press: press.knobs.append("key_ratio"), r"knobs lists .*key_ratio.* but its config reads"),
    ],
)
def test_a_press_whose_knobs_list_is_wrong_is_refused(edit, message):
    cfg = compose_config(["press=snapkv"])
    with open_dict(cfg):
        edit(cfg.press)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_the_knobs_list_is_no_press_field_and_no_part_of_the_identity():
    cfg = compose_config(["press=snap_spark"])
    assert "knobs" not in effective_config(cfg, validate(cfg).knobs)["press"]
    assert build_press(cfg.press) is not None  # kvpress's ComposedPress takes no `knobs` field


def test_the_composed_defaults_are_the_knob_table():
    cfg = compose_config([])
    assert {name: cfg[name] for name in knobs.NAMES} == knobs.defaults()


def test_the_readme_lists_every_knob_with_its_default():
    readme = (ROOT / "README.md").read_text()
    for knob in knobs.KNOBS:
        default = knob.default
        shown = "null" if default is None else f"`{default}`" if isinstance(default, str) else str(default)
        assert f"| `{knob.name}` | {shown} |" in readme, knob.name


def test_every_knob_has_its_own_run_directory_tag():
    tags = [knob.tag for knob in knobs.KNOBS]
    assert len(set(tags)) == len(tags), tags


def test_unused_knobs_are_null_and_do_not_change_the_hash():
    a = validate(compose_config(["press=snapkv", "key_ratio=0.5"]))
    b = validate(compose_config(["press=snapkv", "key_ratio=0.8"]))
    assert a.knobs["key_ratio"] is None and a.knobs["recovery"] is None
    assert a.config_hash == b.config_hash
    c = validate(compose_config(["press=snapkv", "compression_ratio=0.3"]))
    assert c.config_hash != a.config_hash and c.knobs["compression_ratio"] == 0.3


def test_kv_budget_replaces_the_ratio():
    cfg = compose_config(["compression_ratio=null", "kv_budget=128"])
    spec = validate(cfg)
    assert spec.knobs["kv_budget"] == 128 and spec.knobs["compression_ratio"] is None
    # built at ratio 0; the runner sets the ratio per context
    assert [p.compression_ratio for p in token_presses(build_press(cfg.press))] == [0.0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["compression_ratio=1.5"], "compression_ratio=1.5 is outside [0, 1)"),
        (["compression_ratio=-0.1"], "compression_ratio=-0.1 is outside [0, 1)"),
        (["key_ratio=-0.1"], "key_ratio=-0.1 is outside [0, 1)"),
        (["key_ratio=1.0"], "key_ratio=1.0 is outside [0, 1)"),
        (["value_ratio=2"], "value_ratio=2 is outside [0, 1)"),
        (["compression_ratio=0.5", "kv_budget=128"], "compression_ratio=0.5 and kv_budget=128 are exclusive"),
        (["compression_ratio=null", "kv_budget=0"], "kv_budget=0 must be a positive integer"),
        (["compression_ratio=null", "kv_budget=12.5"], "kv_budget=12.5 must be a positive integer"),
        (["recovery=banana"], "recovery='banana' is not one of ['none', 'mean', 'exponential', 'normal']"),
        (["token_window=0"], "token_window=0 must be a positive integer"),
        (["channel_window=-1"], "channel_window=-1 must be a positive integer"),
        (["window_size=64"], "window_size=64 is split in two: token_window (SnapKV, PyramidKV) and"),
        (["max_samples=-3"], "max_samples=-3 must be a positive integer"),
        (["dataset.tasks=[nosuchtask]"], "unknown task(s) ['nosuchtask'] for ruler; valid: ['niah_single_1'"),
        (["dataset.tasks=[]"], "dataset.tasks is empty; choose from ['niah_single_1'"),
    ],
)
def test_bad_values_raise_a_clear_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("group", "valid"), [("press", "snapkv"), ("model", "tiny-llama"), ("dataset", "ruler")]
)
def test_unknown_choices_list_the_valid_ones(group, valid):
    with pytest.raises(MissingConfigException) as err:
        compose_config([f"{group}=nosuch{group}"])
    assert f"nosuch{group}" in str(err.value) and valid in str(err.value)


@pytest.mark.parametrize(
    ("press", "reads"),
    [
        ("snapkv", {"token_window"}),
        ("pyramidkv", {"token_window"}),
        ("think", {"channel_window"}),
        ("spark", {"channel_window"}),
        ("snap_think", {"token_window", "channel_window"}),
        ("pyramid_think", {"token_window", "channel_window"}),
        ("snap_spark", {"token_window", "channel_window"}),
        ("pyramid_spark", {"token_window", "channel_window"}),
        ("streaming_llm", set()),
    ],
)
def test_token_and_channel_presses_read_their_own_window(press, reads):
    """The SparK reference runs SnapKV/PyramidKV with a 64-token window and SparK/ThinK with 32:
    two knobs, each reaching only its own presses."""
    cfg = compose_config([f"press={press}", "token_window=64", "channel_window=16"])
    assert set(press_knobs(cfg.press, press)) & {"token_window", "channel_window"} == reads
    built = build_press(cfg.press)
    parts = built.presses if hasattr(built, "presses") else [built]
    for part in parts:
        if hasattr(part, "window_size"):
            token_press = type(part).__name__ in ("SnapKVPress", "PyramidKVPress")
            assert part.window_size == (64 if token_press else 16), type(part).__name__
    spec = validate(cfg)
    for knob in ("token_window", "channel_window"):
        assert spec.knobs[knob] == (
            {"token_window": 64, "channel_window": 16}[knob] if knob in reads else None
        )


def test_windows_name_the_run_directory_and_change_its_identity():
    a = validate(compose_config(["press=snap_spark", "token_window=64"]))
    b = validate(compose_config(["press=snap_spark", "token_window=32"]))
    assert a.config_hash != b.config_hash
    from spark_bench.paths import knob_tags

    assert "tw64" in knob_tags(a) and "cw32" in knob_tags(a)
