"""A user's data files, read so that every problem is said as ``file[:line]``, what is wrong
and what to do: the runner turns these errors into one line, not a traceback.

Only reading and shape checks live here; what a record means is its loader's business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# A field's expected JSON type(s), as ``isinstance`` takes them; ``object``: any value.
FieldTypes = Mapping[str, type | tuple[type, ...]]
JSON_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
LINE_FIX = "fix or delete that line"


class DataFileError(ValueError):
    """A data file that cannot be read as its loader expects; the message names it and says why."""


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DataFileError(f"{path}:{line} is not UTF-8 text ({err.reason}): save it as UTF-8") from None
    except OSError as err:  # a directory, no permission
        raise DataFileError(f"cannot read {path}: {err.strerror or err}") from None


def read_json(path: Path) -> Any:
    """The one JSON document in ``path``."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFileError(
            f"{path}:{err.lineno} is not valid JSON ({err.msg}): repair or replace it"
        ) from None


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of ``path``, one a line, each with its line number; blank lines skipped."""
    records = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}:{number} is not valid JSON ({err.msg}): {LINE_FIX}") from None
        if not isinstance(record, dict):
            raise DataFileError(f"{path}:{number} is {type_name(record)}, not a JSON object: {LINE_FIX}")
        records.append((number, record))
    return records


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """The rows of a parquet file as records."""
    import pandas as pd
    import pyarrow

    try:
        return pd.read_parquet(path).to_dict("records")
    except (pyarrow.ArrowException, ValueError, OSError) as err:  # ArrowInvalid, ArrowIOError, ...
        reason = next(iter(str(err).strip().splitlines()), type(err).__name__)
        raise DataFileError(f"{path} is not a readable parquet file ({reason}): replace it") from None


def check_fields(
    where: str, record: Any, fields: FieldTypes, kind: str = "official", fix: str = LINE_FIX
) -> None:
    """``record`` (at ``where``: ``file:line``) is an object holding ``fields`` with their types;
    ``kind`` names whose fields they are, ``fix`` what to do when they are not there."""
    if not isinstance(record, dict):
        raise DataFileError(f"{where} is {type_name(record)}, not a JSON object: {fix}")
    missing = [f for f in fields if f not in record]
    if missing:
        raise DataFileError(f"{where} lacks the {kind} field(s) {missing}: {fix}")
    for field, expected in fields.items():
        if not _matches(record[field], expected):
            raise DataFileError(
                f"{where}: field {field!r} is {type_name(record[field])}, not {_names(expected)}: {fix}"
            )


def type_name(value: Any) -> str:
    """How a JSON value is called in a message: ``a list``, ``null``, ``a number``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return JSON_TYPE_NAMES.get(type(value), f"a {type(value).__name__}")


def _matches(value: Any, expected: type | tuple[type, ...]) -> bool:
    if expected is object:  # any value: the field must only be there
        return True
    return not isinstance(value, bool) and isinstance(value, expected)  # JSON true is no number


def _names(expected: type | tuple[type, ...]) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(dict.fromkeys(JSON_TYPE_NAMES.get(k, k.__name__) for k in kinds))
