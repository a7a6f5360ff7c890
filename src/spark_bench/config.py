"""Check a composed run config before anything heavy happens, and derive what the run is.

Every check here runs before a model loads, so a typo costs a second, not a model load.
Hydra itself rejects unknown group choices (``press=nosuch``) with the list of valid ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from spark_bench import knobs as knob_table
from spark_bench import tasks as benchmarks
from spark_bench.checks import check_positive_int

# The single window knob of earlier versions, now token_window + channel_window: kept in the
# config (null) so that ``window_size=64`` fails with the new names instead of Hydra's
# "not in struct" (whose ``+window_size=64`` would be silently ignored).
RETIRED_WINDOW_KNOB = "window_size"
# rerun=stale: run again the points whose complete results.json other code made.
STALE = "stale"
RERUN_CHOICES = (False, STALE, True)
# The interpolation presses use for their token ratio; it stands for both token-budget knobs.
PRESS_RATIO_KEY = "press_ratio"
GROUPS = ("model", "press", "dataset", "logger")
# Presses that score tokens from the attention weights, which only eager attention returns.
EAGER_PRESSES = ("kvpress.ObservedAttentionPress",)
# model.attn_implementation values a run can use: transformers' own (its AttentionInterface,
# less the paged ones, made for continuous batching) and spark_bench's per-layer SDPA
# (attention.py, which PyramidKV switches to).
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "sdpa_per_layer")
# transformers' own that a run cannot use, with the reason said with the refusal. flex_attention:
# kvpress's attention patch passes it dropout where it takes scaling, so every sample would fail.
REFUSED_ATTENTION = {"flex_attention": "kvpress's attention patch breaks it: every sample fails"}
# What every conf/model/*.yaml sets, per loader (the runner and the loader read each of them).
MODEL_FIELDS = ("name", "loader", "dtype", "attn_implementation", "max_prompt_tokens")
LOADER_FIELDS = {"hub": ("pretrained",), "embedded": (), "random": ("architecture", "init_seed", "config")}
# model.device_map strategies of accelerate; a device ("cuda:0") or a {module: device} map also go.
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


# Config keys that do not change a run's outputs: left out of its effective config and hash.
# decode a shared job's points as one batch (decode_together): the same answers, so not identity
BATCH_DECODE_KEY = "batch_decode"
NOT_OUTPUT_KEYS = (
    "hydra", "logger", "paths", "rerun", "dry_run", "cluster", PRESS_RATIO_KEY, RETIRED_WINDOW_KNOB,
    BATCH_DECODE_KEY,
)  # fmt: skip


class ConfigError(ValueError):
    """A run config that cannot run; the message names the value and what is valid."""


def register_resolvers() -> None:
    """What the config tree needs besides conf/: OmegaConf resolvers, and the knobs' defaults
    as the ``knobs`` config (from ``spark_bench.knobs``); idempotent."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=knob_table.CONFIG_NAME, node=knob_table.defaults())
    if not OmegaConf.has_resolver("sb.coalesce"):
        # ${sb.coalesce:a,b}: the first non-null argument (OmegaConf's oc.select keeps a null).
        OmegaConf.register_new_resolver(
            "sb.coalesce", lambda *values: next((v for v in values if v is not None), None)
        )


register_resolvers()


@dataclass(frozen=True)
class RunSpec:
    """What a run is, derived from its config: names, the knobs that apply, its identity."""

    model: str
    press: str
    dataset: str
    logger: str
    tasks: tuple[str, ...]
    knobs: dict[str, Any]  # every press knob; null where the chosen press does not use it
    config_hash: str


def _hydra_runtime(cfg: DictConfig) -> Any:
    """Hydra's runtime node (choices, config sources), or None for a config composed without it."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime
    return cfg.hydra.runtime if "hydra" in cfg else None


def choices(cfg: DictConfig) -> dict[str, str]:
    """The group choices (``press=snapkv``) of a composed config.

    Hydra records them in its runtime config; a config composed in Python without it
    (``compose(return_hydra_config=False)``) falls back to the ``name`` fields.
    """
    hydra_runtime = _hydra_runtime(cfg)
    runtime = hydra_runtime.choices if hydra_runtime is not None else {}
    out = {}
    for group in GROUPS:
        name = runtime.get(group)
        if name is None:
            name = OmegaConf.select(cfg, f"{group}.name")
        if name is None:
            raise ConfigError(
                f"cannot tell which {group} this config chose (no Hydra runtime, no {group}.name)"
            )
        out[group] = str(name)
    return out


def _unresolved_json(press_cfg: Any) -> str:
    """A press config as JSON text, interpolations left as written (``${key_ratio}``)."""
    if press_cfg is None or not OmegaConf.is_config(press_cfg):
        return ""
    return json.dumps(OmegaConf.to_container(press_cfg, resolve=False))


def interpolated_knobs(press_cfg: Any) -> set[str]:
    """The knobs a press config's (unresolved) interpolations name: what its ``knobs:`` list
    must declare, or the run's identity would miss a setting that changes its outputs."""
    raw = _unresolved_json(press_cfg)
    used = set(re.findall(r"\$\{(\w+)\}", raw)) | set(re.findall(r"\$\{[\w.]+:\$\{(\w+)\}", raw))
    if PRESS_RATIO_KEY in raw:
        used |= {"compression_ratio", "kv_budget"}
    return used & set(knob_table.NAMES)


def press_knobs(press_cfg: Any, press: str) -> tuple[str, ...]:
    """The knobs press ``press`` reads, as its config declares them (``knobs: [...]``), checked
    against the knobs it interpolates."""
    declared = press_cfg.get(knob_table.PRESS_KEY) if OmegaConf.is_config(press_cfg) else None
    if not isinstance(declared, (list, ListConfig)):
        raise ConfigError(
            f"press {press}: its config must list the knobs it reads, e.g. knobs: [key_ratio] "
            f"(knobs: [] for none); got knobs={declared!r}. Knobs: {list(knob_table.NAMES)}"
        )
    unknown = [k for k in declared if k not in knob_table.NAMES]
    if unknown:
        raise ConfigError(f"press {press}: knobs lists unknown {unknown}; knobs: {list(knob_table.NAMES)}")
    interpolated = interpolated_knobs(press_cfg)
    if set(declared) != interpolated:
        raise ConfigError(
            f"press {press}: knobs lists {sorted(declared)} but its config reads {sorted(interpolated)} "
            f"(${{{PRESS_RATIO_KEY}}} reads compression_ratio and kv_budget): make them agree"
        )
    return tuple(declared)


def validate(cfg: DictConfig) -> RunSpec:
    """Check every knob and choice; return the run's identity. Raises ConfigError."""
    names = choices(cfg)
    try:
        knob_table.check({name: cfg[name] for name in knob_table.NAMES})
    except ValueError as err:
        raise ConfigError(str(err)) from err
    _check_budget(cfg)
    if cfg.get(RETIRED_WINDOW_KNOB) is not None:
        raise ConfigError(
            f"{RETIRED_WINDOW_KNOB}={cfg[RETIRED_WINDOW_KNOB]} is split in two: token_window (SnapKV, "
            "PyramidKV) and channel_window (SparK, ThinK); the SparK reference runs token_window=64 "
            "channel_window=32"
        )
    for knob in ("max_samples", "max_new_tokens"):
        if cfg[knob] is not None:
            _check_positive_int(cfg, knob)
    if not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} must be an integer")
    if not isinstance(cfg.get(BATCH_DECODE_KEY, False), bool):
        raise ConfigError(f"{BATCH_DECODE_KEY}={cfg[BATCH_DECODE_KEY]!r} must be true or false")
    if not isinstance(cfg.get("dry_run", False), bool):
        raise ConfigError(f"dry_run={cfg.dry_run!r} must be true or false")
    if cfg.get("rerun", False) not in RERUN_CHOICES:
        raise ConfigError(
            f"rerun={cfg.rerun!r} is not one of {list(RERUN_CHOICES)}: false skips a complete result, "
            "stale runs again those made by other code, true runs every point again"
        )
    tasks = _check_tasks(cfg.dataset)
    _check_data_dir(cfg.dataset, tasks)
    _check_model(cfg.model)
    if not isinstance(cfg.compress_questions, bool):
        raise ConfigError(f"compress_questions={cfg.compress_questions!r} must be true or false")
    _check_attention(cfg)
    used = press_knobs(cfg.press, names["press"])
    knobs = {k: (cfg[k] if k in used else None) for k in knob_table.NAMES}
    return RunSpec(
        model=model_label(cfg, names["model"]),
        press=names["press"],
        dataset=names["dataset"],
        logger=names["logger"],
        tasks=tasks,
        knobs=knobs,
        config_hash=config_hash(cfg, knobs),
    )


def model_label(cfg: DictConfig, preset: str) -> str:
    """The model a run is filed under: the preset's name, or ``<preset>@<checkpoint>`` when
    ``model.pretrained`` overrides the checkpoint the preset loads (a fine-tune, a local copy),
    so that two checkpoints never share a run directory, a results row or a report row."""
    if cfg.model.get("loader") != "hub":
        return preset  # the embedded and random models load no checkpoint by name
    loaded = str(cfg.model.pretrained)
    shipped = _preset_field(cfg, "model", preset, "pretrained")
    if shipped is None or loaded == str(shipped):
        return preset
    return f"{preset}@{checkpoint_slug(loaded)}"


def checkpoint_slug(pretrained: str) -> str:
    """A hub id as ``org--name`` (the hub cache's own naming), a directory by its name (a hub
    cache snapshot by its model folder); characters other than letters, digits, ``.``, ``_``
    and ``-`` become ``-``."""
    path = Path(pretrained.rstrip("/"))
    if pretrained.startswith(("/", ".", "~")) or path.exists():
        name = path.parent.parent.name if path.parent.name == "snapshots" else path.name
    else:
        name = pretrained.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def _preset_field(cfg: DictConfig, group: str, choice: str, field: str) -> Any:
    """``field`` of the group file ``<group>/<choice>.yaml`` as shipped, before overrides, read
    from the first directory of Hydra's config search path that holds it (None if none does)."""
    runtime = _hydra_runtime(cfg)
    for source in runtime.config_sources if runtime is not None else ():
        candidate = Path(source.path) / group / f"{choice}.yaml"
        if source.schema == "file" and candidate.is_file():
            return OmegaConf.load(candidate).get(field)
    return None


def press_targets(press_cfg: Any) -> list[str]:
    """Every ``_target_`` inside a press config (composed presses included)."""
    return re.findall(r'"_target_": "([\w.]+)"', _unresolved_json(press_cfg))


def _check_attention(cfg: DictConfig) -> None:
    needs_eager = [t for t in press_targets(cfg.press) if t in EAGER_PRESSES]
    implementation = cfg.model.attn_implementation
    if needs_eager and implementation != "eager":
        raise ConfigError(
            f"press {needs_eager[0]} reads attention weights, which only eager attention returns, but "
            f"model.attn_implementation={implementation!r}: use model.attn_implementation=eager"
        )


def _check_model(model: DictConfig) -> None:
    """The model preset's fields, before anything loads (a bad value would fail seconds or
    minutes later, inside transformers)."""
    from spark_bench import models  # torch: imported when a run is checked, not before

    _check_fields(model, MODEL_FIELDS)
    _check_choice(model, "loader", models.LOADERS)
    _check_fields(model, LOADER_FIELDS[model.loader])
    _check_choice(model, "dtype", tuple(models.DTYPES))
    _check_attn_implementation(model.attn_implementation)
    _check_positive_int(model, "max_prompt_tokens", "model.")
    template_args = model.get("chat_template_kwargs")
    if template_args is not None and not isinstance(template_args, DictConfig):
        raise ConfigError(
            f"model.chat_template_kwargs={template_args!r} must be a mapping of chat template arguments "
            "(e.g. '+model.chat_template_kwargs={enable_thinking:false}') or null"
        )
    _check_device_map(model.get("device_map"))
    if model.loader == "hub":
        _check_pretrained(model.pretrained)
    elif model.loader == "random":
        _check_random_model(model)


def _check_attn_implementation(implementation: Any) -> None:
    if implementation in ATTENTION_IMPLEMENTATIONS:
        return
    valid = list(ATTENTION_IMPLEMENTATIONS)
    if implementation in REFUSED_ATTENTION:
        raise ConfigError(
            f"model.attn_implementation={implementation!r} cannot run: {REFUSED_ATTENTION[implementation]}; "
            f"use one of {valid}"
        )
    raise ConfigError(f"model.attn_implementation={implementation!r} is not one of {valid}")


def _check_fields(model: DictConfig, fields: tuple[str, ...]) -> None:
    missing = [f for f in fields if f not in model]
    if missing:
        raise ConfigError(
            f"model {model.get('name')!r} lacks the field(s) {missing}: a model preset sets them "
            "(see conf/model/llama3.1-8b.yaml)"
        )


def _check_choice(model: DictConfig, field: str, valid: tuple[str, ...]) -> None:
    if model[field] not in valid:
        raise ConfigError(f"model.{field}={model[field]!r} is not one of {list(valid)}")


def _check_device_map(device_map: Any) -> None:
    import torch

    if device_map is None or isinstance(device_map, DictConfig) or device_map in DEVICE_MAP_STRATEGIES:
        return
    if isinstance(device_map, int) and not isinstance(device_map, bool) and device_map >= 0:
        return  # a GPU index
    if isinstance(device_map, str):
        try:
            torch.device(device_map)
            return
        except RuntimeError:
            pass
    raise ConfigError(
        f"model.device_map={device_map!r} is not one of {list(DEVICE_MAP_STRATEGIES)}, a device "
        "(cuda:0, cpu), a GPU index or null"
    )


def _check_pretrained(pretrained: Any) -> None:
    """A hub id or a path, as text. Whether it exists is checked where the model loads (the
    path may be a compute node's, absent where a dry run is planned)."""
    if not isinstance(pretrained, str) or not pretrained:
        raise ConfigError(f"model.pretrained={pretrained!r} must be a hub id (org/name) or a local directory")


def _check_random_model(model: DictConfig) -> None:
    from transformers import CONFIG_MAPPING

    if model.architecture not in CONFIG_MAPPING:
        raise ConfigError(
            f"model.architecture={model.architecture!r} is not a model type of transformers "
            "(llama, mistral, qwen3, ...)"
        )
    if isinstance(model.init_seed, bool) or not isinstance(model.init_seed, int):
        raise ConfigError(f"model.init_seed={model.init_seed!r} must be an integer")
    if not isinstance(model.config, DictConfig):
        raise ConfigError(f"model.config={model.config!r} must be a mapping of the model's config fields")


def _check_data_dir(dataset: DictConfig, tasks: tuple[str, ...]) -> None:
    """The dataset's fields and local data are what its benchmark's loader reads."""
    try:
        benchmarks.get(dataset.name).check_dataset(dataset, tasks)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _check_budget(cfg: DictConfig) -> None:
    """The two token-budget knobs are exclusive (each one alone is checked with the knobs)."""
    if cfg.kv_budget is not None and cfg.compression_ratio is not None:
        raise ConfigError(
            f"compression_ratio={cfg.compression_ratio} and kv_budget={cfg.kv_budget} are exclusive: "
            "a token budget sets the ratio per context. Use compression_ratio=null kv_budget=<tokens>, "
            "or drop kv_budget."
        )


def _check_positive_int(cfg: DictConfig, knob: str, prefix: str = "") -> None:
    """``cfg[knob]`` is a positive integer; ``prefix`` is the node's path in messages (``model.``)."""
    check_positive_int(f"{prefix}{knob}", cfg[knob], error=ConfigError)


def _check_tasks(dataset: DictConfig) -> tuple[str, ...]:
    name = dataset.name
    if name not in benchmarks.BENCHMARKS:
        raise ConfigError(f"dataset {name!r} has no loader yet; available: {list(benchmarks.names())}")
    valid = benchmarks.get(name).tasks
    tasks = dataset.tasks
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, (list, ListConfig)):
        raise ConfigError(f"dataset.tasks={tasks!r} must be a task or a list of tasks, e.g. [{valid[0]}]")
    if not tasks:
        raise ConfigError(f"dataset.tasks is empty; choose from {list(valid)}")
    unknown = [t for t in tasks if t not in valid]
    if unknown:
        raise ConfigError(f"dataset.tasks has unknown task(s) {unknown} for {name}; valid: {list(valid)}")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"dataset.tasks lists a task twice: {list(tasks)}")
    return tuple(tasks)


def effective_config(cfg: DictConfig, knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config that decides a run's outputs: no logger, paths or Hydra settings,
    and press knobs the chosen press does not read set to null."""
    resolved: dict[str, Any] = {}
    for key in cfg:
        if key in NOT_OUTPUT_KEYS:
            continue
        value = cfg[key]
        resolved[str(key)] = (
            OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        )
    resolved.get("model", {}).pop("resources", None)  # scheduler resources do not change outputs
    if isinstance(resolved.get("press"), dict):  # which knobs the press reads: in ``knobs`` below
        resolved["press"].pop(knob_table.PRESS_KEY, None)
    resolved.update(knobs)
    return resolved


def prefill_key(cfg: DictConfig, knobs: Mapping[str, Any]) -> str:
    """What the points of a sweep must agree on to share their prefills (``sweeper``): the
    effective config less the press and its knobs (model, data, samples, seed, prompt settings)."""
    shared = {k: v for k, v in effective_config(cfg, knobs).items() if k not in ("press", *knob_table.NAMES)}
    return json.dumps(shared, sort_keys=True, default=str)


def config_hash(cfg: DictConfig, knobs: Mapping[str, Any]) -> str:
    """12 hex digits identifying a run's effective config (same hash -> same outputs)."""
    canonical = json.dumps(effective_config(cfg, knobs), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
