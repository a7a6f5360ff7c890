"""Read the records of an offline W&B run (``run-<id>.wandb``) without a W&B server.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
LevelDB-log framing in 32 KiB blocks (per chunk: 4-byte checksum, 2-byte length, 1-byte type
FULL/FIRST/MIDDLE/LAST), each record a ``wandb_internal_pb2.Record`` protobuf.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

HEADER = 7
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path} is not a W&B transaction log")
    out, pending, offset = [], b"", HEADER
    while offset + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer padding
            offset += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + CHUNK_HEADER])
        payload = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def run_contents(run_dir: Path) -> dict[str, Any]:
    """id, name, group, config and final summary of the offline run in ``run_dir``."""
    (log,) = list(run_dir.glob("run-*.wandb"))
    contents: dict[str, Any] = {"config": {}, "summary": {}, "history_keys": set()}
    for record in records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            contents["name"], contents["group"] = record.run.display_name, record.run.run_group
            contents["id"] = record.run.run_id
            contents["config"] |= {_key(i): json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "config":
            contents["config"] |= {_key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "summary":
            contents["summary"] |= {_key(i): json.loads(i.value_json) for i in record.summary.update}
        elif kind == "history":
            contents["history_keys"] |= {_key(i) for i in record.history.item}
    return contents
