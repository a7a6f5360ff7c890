"""Records from the Hugging Face hub (or a local copy laid out like the hub repository), with a
failure said in one line: the knob that points there and how to fetch the files once."""

from __future__ import annotations

from typing import Any


class DataSourceError(ValueError):
    """The records cannot be read from where the config points; the message says how to fix it."""


def fetch_hint(hub_id: str, offline_setting: str) -> str:
    """How to run without the hub: download ``hub_id`` once, then point the config at it."""
    return (
        f"To run offline, download it once where the hub is reachable (`hf download {hub_id} "
        f"--repo-type dataset --local-dir <dir>`) and set {offline_setting}"
    )


def load_records(
    source: str, what: str, where: str, hint: str, *args: Any, **kwargs: Any
) -> list[dict[str, Any]]:
    """``datasets.load_dataset(source, *args, **kwargs)`` as a list of records. ``what`` names
    the data (``LongBench task 'qasper'``), ``where`` the config knob that chose ``source``,
    ``hint`` how to do without the hub (empty for a local folder)."""
    from datasets import load_dataset

    try:
        return list(load_dataset(source, *args, **kwargs))
    except Exception as err:  # datasets raises many types: ConnectionError, FileNotFoundError, ...
        reason = next(iter(str(err).strip().splitlines()), "")
        message = f"cannot read {what} from {where}: {type(err).__name__}: {reason}"
        raise DataSourceError(f"{message}. {hint}" if hint else message) from err
