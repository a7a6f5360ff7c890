"""Every user error is one line: whatever the input (knobs, model preset fields, data files, files
an earlier run left in its run directory), ``run.py`` answers ``spark_bench: error: <the value or
file:line, and what to do>`` on stderr with exit code 2, no traceback, and every file it did not
write is left byte for byte as it was (a damaged predictions.jsonl is never rewritten)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from spark_bench import paths
from spark_bench.config import ATTENTION_IMPLEMENTATIONS, ConfigError, validate
from spark_bench.data import files, longbench, longbench_v2
from spark_bench.data.ruler import sources
from spark_bench.models import ModelLoadError, load_tokenizer
from spark_bench.results import Prediction, PredictionLog
from tests.helpers import FAST, FAST_RULER, compose_config, run_py
from tests.helpers.longbench_files import V2_RECORD, write_longbench

# A case writes its files under the test's directory and says what run.py is given and which
# words its one line must hold (the value, the file and line, the fix).
Case = Callable[[Path], tuple[list[str], list[str]]]
CASES: dict[str, Case] = {}
RERUN_FIX = "rerun=true"  # every message about an earlier run's file names the way to start over


def case(build: Case) -> Case:
    CASES[build.__name__] = build
    return build


def results_root(tmp: Path) -> Path:
    return tmp / "results"


def ruler_run_dir(tmp: Path) -> Path:
    """The run directory run.py picks for the default (RULER) case of these tests."""
    spec = validate(compose_config([*FAST, *FAST_RULER, f"paths.results_root={results_root(tmp)}"]))
    out_dir = paths.run_dir(results_root(tmp), spec)
    out_dir.mkdir(parents=True)
    return out_dir


def answered(sample_id: str) -> str:
    """A complete predictions.jsonl line for one sample of the default RULER run."""
    record: Prediction = {
        "id": sample_id, "task": sample_id.split("/")[0], "prediction": "42", "answers": ["42"],
        "score": 100.0, "context_tokens": 500, "kv_cache_bytes": 10, "kv_cache_dense_bytes": 20,
        "prefill_s": 0.1, "decode_s": 0.2,
    }  # fmt: skip
    return json.dumps(record)


def earlier_predictions(tmp: Path, second_line: str) -> tuple[list[str], list[str]]:
    """A predictions.jsonl whose line 2 is ``second_line``, between two good ones."""
    path = ruler_run_dir(tmp) / paths.PREDICTIONS_FILE
    path.write_text(f"{answered('niah_single_1/0')}\n{second_line}\n{answered('niah_single_2/0')}\n")
    return [], [f"{path}:2", RERUN_FIX]


# --- knobs and model preset fields -------------------------------------------------------------


@case
def dtype_unknown(tmp: Path) -> tuple[list[str], list[str]]:  # the example
    return ["model.dtype=float8"], ["model.dtype='float8'", "'bfloat16'"]


@case
def max_prompt_tokens_too_small_for_the_question(tmp: Path) -> tuple[list[str], list[str]]:
    return ["model.max_prompt_tokens=10"], ["model.max_prompt_tokens=10", "niah_single_1/0", "64 or more"]


@case
def pretrained_path_missing(tmp: Path) -> tuple[list[str], list[str]]:
    where = tmp / "user" / "no-such-model"
    return ["model=llama3.1-8b", f"model.pretrained={where}"], [f"model.pretrained={where} does not exist"]


@case
def pretrained_config_not_json(tmp: Path) -> tuple[list[str], list[str]]:
    model = tmp / "user" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{not json")
    return ["model=llama3.1-8b", f"model.pretrained={model}"], [f"model.pretrained='{model}'", "config.json"]


@case
def flash_attention_without_its_package(tmp: Path) -> tuple[list[str], list[str]]:
    from transformers.utils import is_flash_attn_2_available, is_kernels_available

    if is_flash_attn_2_available() or is_kernels_available():
        pytest.skip("flash attention runs on this machine")
    return ["model.attn_implementation=flash_attention_2"], ["flash_attention_2", "flash_attn", "sdpa"]


# --- data files --------------------------------------------------------------------------------


def longbench_file(tmp: Path, line2: str | None = None) -> tuple[list[str], Path]:
    """A local LongBench qasper.jsonl of 3 records, line 2 replaced by ``line2``."""
    data = tmp / "user" / "longbench"
    data.mkdir(parents=True)
    write_longbench(data, "qasper", 3)
    path = data / "qasper.jsonl"
    if line2 is not None:
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0], line2, lines[2]]) + "\n")
    return ["dataset=longbench", f"dataset.data_dir={data}", "dataset.tasks=[qasper]"], path


@case
def longbench_line_not_json(tmp: Path) -> tuple[list[str], list[str]]:
    overrides, path = longbench_file(tmp, '{"input": "cut')
    return overrides, [f"{path}:2 is not valid JSON", "fix or delete that line"]


@case
def longbench_field_of_the_wrong_type(tmp: Path) -> tuple[list[str], list[str]]:
    bad = {"input": "q", "context": "c", "answers": "not a list"}
    overrides, path = longbench_file(tmp, json.dumps(bad))
    return overrides, [f"{path}:2", "'answers' is a string, not a list"]


def longbench_v2_dir(tmp: Path, name: str, content: bytes) -> tuple[list[str], Path]:
    data = tmp / "user" / "v2"
    data.mkdir(parents=True)
    (data / name).write_bytes(content)
    return [
        "dataset=longbench_v2",
        f"dataset.data_dir={data}",
        "dataset.tasks=[single_document_qa]",
    ], data / name


@case
def longbench_v2_json_not_a_list(tmp: Path) -> tuple[list[str], list[str]]:
    overrides, path = longbench_v2_dir(tmp, "data.json", json.dumps({"data": [V2_RECORD]}).encode())
    return overrides, [f"{path} holds an object", "list of records"]


@case
def longbench_v2_parquet_damaged(tmp: Path) -> tuple[list[str], list[str]]:
    overrides, path = longbench_v2_dir(tmp, "data.parquet", b"PAR1 cut short")
    return overrides, [f"{path} is not a readable parquet file"]


@case
def ruler_local_record_without_input(tmp: Path) -> tuple[list[str], list[str]]:
    data = tmp / "user" / "ruler"
    path = data / "512" / "niah_single_1" / sources.NATIVE_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"outputs": ["42"]}) + "\n")
    overrides = ["dataset.source=local", f"dataset.data_dir={data}", "dataset.tasks=[niah_single_1]"]
    return overrides, [f"{path}:1 lacks the RULER field(s) ['input']"]


@case
def ruler_qa_file_of_another_layout(tmp: Path) -> tuple[list[str], list[str]]:
    qa = tmp / "user" / "qa"
    qa.mkdir(parents=True)
    (qa / "squad.json").write_text(json.dumps({"data": [{"title": "no paragraphs"}]}))
    (qa / "hotpotqa.json").write_text("[]")
    return [f"dataset.qa_dir={qa}", "dataset.tasks=[qa_1]"], [f"{qa / 'squad.json'}", "SQuAD v2.0 dev"]


# --- files an earlier run left in the run directory --------------------------------------------


@case
def predictions_line_not_json(tmp: Path) -> tuple[list[str], list[str]]:
    return earlier_predictions(tmp, '{"id": "niah_single_1/1", "pred')


@case
def predictions_line_not_an_object(tmp: Path) -> tuple[list[str], list[str]]:
    overrides, expected = earlier_predictions(tmp, '["niah_single_1/1"]')
    return overrides, [*expected, "not a record"]


@case
def predictions_record_without_task(tmp: Path) -> tuple[list[str], list[str]]:
    record = json.loads(answered("niah_single_1/1"))
    del record["task"]
    overrides, expected = earlier_predictions(tmp, json.dumps(record))
    return overrides, [*expected, "lacks the field(s) ['task']"]


@case
def predictions_record_of_another_sample(tmp: Path) -> tuple[list[str], list[str]]:
    overrides, expected = earlier_predictions(tmp, answered("vt/7"))
    return overrides, [*expected, "'vt/7'"]


@case
def predictions_file_is_a_directory(tmp: Path) -> tuple[list[str], list[str]]:
    path = ruler_run_dir(tmp) / paths.PREDICTIONS_FILE
    (path / "stray").mkdir(parents=True)
    return [], [f"cannot read {path}", RERUN_FIX]


@case
def results_file_is_a_directory(tmp: Path) -> tuple[list[str], list[str]]:
    path = ruler_run_dir(tmp) / paths.RESULTS_FILE
    (path / "stray").mkdir(parents=True)
    return [], [f"{path} is not a file", RERUN_FIX]


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.subprocess
@pytest.mark.parametrize("name", list(CASES))
def test_run_py_says_a_bad_input_in_one_line_and_keeps_every_file(name, tmp_path):
    overrides, expected = CASES[name](tmp_path)
    other_dataset = any(o.startswith("dataset=") for o in overrides)
    before = snapshot(tmp_path)
    proc = run_py(
        *FAST,
        *([] if other_dataset else FAST_RULER),
        f"paths.results_root={results_root(tmp_path)}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        *overrides,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("spark_bench: error: ")
    for words in expected:
        assert words in line, line
    assert snapshot(tmp_path).items() >= before.items()  # nothing the user had was changed
    assert not [p for p in results_root(tmp_path).rglob(paths.RESULTS_FILE) if p.is_file()]  # no run


# --- the same checks in process, where a subprocess adds nothing -------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.loader=nosuch", "model.loader='nosuch' is not one of ['hub', 'embedded', 'random']"),
        ("model.attn_implementation=flash", "model.attn_implementation='flash' is not one of ['sdpa'"),
        ("model.attn_implementation=flex_attention", "cannot run: kvpress's attention patch breaks it"),
        ("model.max_prompt_tokens=0", "model.max_prompt_tokens=0 must be a positive integer"),
        ("+model.chat_template_kwargs=abc", "model.chat_template_kwargs='abc' must be a mapping"),
        ("model.device_map=gpu0", "model.device_map='gpu0' is not one of ['auto'"),
        ("model.architecture=nosuch", "model.architecture='nosuch' is not a model type of transformers"),
        ("model.init_seed=abc", "model.init_seed='abc' must be an integer"),
        ("~model.max_prompt_tokens", "model 'tiny-llama' lacks the field(s) ['max_prompt_tokens']"),
        ("dataset.num_samples=ten", "dataset.num_samples='ten' must be a positive integer"),
        ("dataset.tasks=3", "dataset.tasks=3 must be a task or a list of tasks"),
        ("compress_questions=maybe", "compress_questions='maybe' must be true or false"),
    ],
)
def test_bad_model_fields_and_knobs_fail_the_config_check(make_config, override, message):
    with pytest.raises(ConfigError) as err:
        validate(make_config(override))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("pretrained", "message"),
    [
        ("{tmp}", "model.pretrained={tmp} holds no config.json"),
        ("'~/models/llama'", "(~ is not expanded: write the whole path)"),  # Hydra wants ~ quoted
    ],
)
def test_a_model_path_that_is_no_model_is_said_before_anything_loads(tmp_path, pretrained, message):
    spec = compose_config(["model=llama3.1-8b", f"model.pretrained={pretrained.format(tmp=tmp_path)}"]).model
    with pytest.raises(ModelLoadError, match=re.escape(message.format(tmp=tmp_path))):
        load_tokenizer(spec)


def test_the_attention_implementations_are_what_transformers_runs():
    from transformers import AttentionInterface

    from spark_bench import attention

    assert attention.NAME in ATTENTION_IMPLEMENTATIONS
    assert set(ATTENTION_IMPLEMENTATIONS) <= {"eager", *AttentionInterface().valid_keys()}


def test_data_files_name_the_line_and_the_fault(tmp_path):
    path = tmp_path / "qasper.jsonl"
    path.write_bytes(b'{"input": "q", "context": "c", "answers": []}\n\xff\xfe\n')
    with pytest.raises(files.DataFileError, match=re.escape(f"{path}:2 is not UTF-8 text")):
        longbench.load_records("qasper", str(tmp_path))
    path.write_text("3\n")
    with pytest.raises(files.DataFileError, match=re.escape(f"{path}:1 is a number, not a JSON object")):
        longbench.load_records("qasper", str(tmp_path))
    write_longbench(tmp_path, "qasper", 1)  # LongBench-E reads each record's length
    (tmp_path / "qasper_e.jsonl").write_text(json.dumps({"input": "q", "context": "c", "answers": []}) + "\n")
    with pytest.raises(
        files.DataFileError, match=r"qasper_e\.jsonl:1 lacks the official field\(s\) \['length'\]"
    ):
        longbench.load_records("qasper", str(tmp_path), longbench_e=True)
    (tmp_path / "data.jsonl").write_text(json.dumps({**V2_RECORD, "question": None}) + "\n")
    with pytest.raises(files.DataFileError, match=r"data\.jsonl:1: field 'question' is null, not a string"):
        longbench_v2.load_records(str(tmp_path))


def test_prediction_log_names_the_line_and_keeps_a_whole_last_record(tmp_path):
    log = PredictionLog(tmp_path / paths.PREDICTIONS_FILE)
    tasks = {"niah_single_1/0": "niah_single_1", "niah_single_1/1": "niah_single_1"}
    wrong_task = json.loads(answered("niah_single_1/1")) | {"task": "vt"}
    log.path.write_text(f"{answered('niah_single_1/0')}\n{json.dumps(wrong_task)}\n")
    with pytest.raises(ValueError, match=r"jsonl:2 says sample 'niah_single_1/1' is of task 'vt'"):
        log.read(tasks)
    wrong_type = json.loads(answered("niah_single_1/1")) | {"prediction": 5}
    log.path.write_text(f"{answered('niah_single_1/0')}\n{json.dumps(wrong_type)}\n")
    with pytest.raises(ValueError, match=r"jsonl:2 has prediction=5, not of type str"):
        log.read(tasks)
    # A whole record without its newline (a hand edit) is an answer: kept, and the file ends it.
    log.path.write_text(f"{answered('niah_single_1/0')}\n{answered('niah_single_1/1')}")
    assert list(log.read(tasks)) == list(tasks)
    log.repair()
    assert log.path.read_text().splitlines() == [answered("niah_single_1/0"), answered("niah_single_1/1")]
    # A torn last line cut inside a multi-byte character is still only a torn line.
    log.path.write_bytes(f"{answered('niah_single_1/0')}\n".encode() + '{"prediction": "é'.encode()[:-1])
    assert list(log.read(tasks)) == ["niah_single_1/0"]
