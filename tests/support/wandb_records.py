"""Read what an offline W&B run logged, from its ``.wandb`` file (no server, no wandb internals); set up such a
run (:func:`offline_without_api_key`)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

FILE_HEADER = 7  # ":W&B", a 2-byte magic, a version byte
BLOCK = 32768  # LevelDB log format: 32 KiB blocks of fragments, each with a 7-byte header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def offline_without_api_key(patch: pytest.MonkeyPatch, root: Path) -> None:
    """No W&B API key anywhere (so runs log offline); W&B's own folders under ``root``."""
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        patch.delenv(variable, raising=False)
    patch.setenv("NETRC", str(root / "netrc-absent"))
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        patch.setenv(variable, str(root / "wandb-home"))
    patch.setenv("WANDB_SILENT", "true")


def read_records(path: str | Path) -> list:
    """Every record of a ``run-*.wandb`` file as ``wandb.proto.wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    payloads, pending, position = [], b"", FILE_HEADER
    while position + 7 <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < 7:  # block trailer: zero padding
            position += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + 7])
        fragment = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == FULL:
            payloads.append(fragment)
        elif kind == FIRST:
            pending = fragment
        elif kind == MIDDLE:
            pending += fragment
        elif kind == LAST:
            payloads.append(pending + fragment)
        elif kind == 0 and length == 0:  # zero padding to the end of the block
            position += BLOCK - position % BLOCK if position % BLOCK else 0
    return [wandb_internal_pb2.Record.FromString(payload) for payload in payloads]


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def logged_run(path: str | Path) -> dict[str, Any]:
    """``{"history": [{metric: value}], "config": {key: value}, "summary": {...}, "run": {group, tags, ...}}``."""
    result: dict[str, Any] = {"history": [], "config": {}, "summary": {}, "run": {}, "metrics": {}}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            result["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "config":
            result["config"].update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            result["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "run":
            run = record.run
            result["run"] = {"group": run.run_group, "name": run.display_name, "tags": list(run.tags)}
            result["config"].update({_key(i): json.loads(i.value_json) for i in run.config.update})
        elif kind == "metric":
            metric = record.metric
            result["metrics"][metric.name or metric.glob_name] = metric
    return result
