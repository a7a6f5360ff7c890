"""results.json is written atomically; predictions.jsonl survives a crash mid-line."""

from __future__ import annotations

import json
from unittest import mock

import pytest

from spark_bench.results import PredictionLog, read_results, write_json_atomic


def record(i: int) -> dict:
    return {"id": f"t/{i}", "task": "t", "prediction": "p", "answers": ["a"], "score": 0.0,
            "context_tokens": 9, "kv_cache_bytes": 4, "kv_cache_dense_bytes": 8, "prefill_s": 0.1,
            "decode_s": 0.2}  # fmt: skip


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"schema": 1, "v": 1})
    with mock.patch("json.dump", side_effect=RuntimeError("disk full")), pytest.raises(RuntimeError):
        write_json_atomic(path, {"schema": 1, "v": 2})
    assert json.loads(path.read_text()) == {"schema": 1, "v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


def test_read_results_checks_the_schema(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"schema": 99})
    with pytest.raises(ValueError, match="schema 99"):
        read_results(path)


def test_prediction_log_round_trip_and_torn_last_line(tmp_path):
    log = PredictionLog(tmp_path / "predictions.jsonl")
    assert log.read() == {}
    for i in range(3):
        log.append(record(i))
    with open(log.path, "a") as handle:
        handle.write('{"id": "t/3", "task": "t", "predi')  # killed mid-write
    assert list(log.read()) == ["t/0", "t/1", "t/2"]
    log.repair()
    log.append(record(3))
    assert list(log.read()) == ["t/0", "t/1", "t/2", "t/3"]
    assert all(json.loads(line) for line in log.path.read_text().splitlines())


def test_a_corrupt_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text(f"{json.dumps(record(0))}\nnot json\n{json.dumps(record(1))}\n")
    with pytest.raises(ValueError, match=r"predictions\.jsonl:2"):
        PredictionLog(path).read()
