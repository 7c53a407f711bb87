"""Result records: the one module that writes, reads and validates them (and their predictions).

A record is one JSON file per run (a single run, a comparison cell, a tune trial or a study
point alike), named ``<model>-<dataset>-<run_id>.json``; its test predictions sit beside it as
``<same stem>.predictions.npz``. Every table, plot and report is made from records, never from
logs or Ray's own files. Files are written atomically (temporary name, then rename), so a
killed process never leaves a half-written record that a reader could take for a result.

Every record carries ``schema``, ``run_id``, ``status`` (``ok``, ``failed`` or ``stopped``: a
tune trial the scheduler ended early), ``model``, ``dataset``, ``kind`` (run, compare, tune,
study), ``key`` (the resume key, so a rerun finds finished cells by content, never by file
name) and ``identity`` (what the key is made of, ``resume_key.cell_identity``: the key, the
sha256 of every data file the run read, the code version; the effective config is in
``config``), ``started_at`` / ``finished_at``
(ISO 8601, UTC) and ``where`` (host, pid, Ray node id when it ran on Ray, device). An ``ok``
record adds the metrics, history and effective config; a ``failed`` one the error.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import secrets
import socket
import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

import numpy as np

from .errors import RecordError
from .files import write_bytes

SCHEMA = 2
STATUSES = ("ok", "failed", "stopped")
REQUIRED = ("schema", "run_id", "status", "model", "dataset", "kind", "key", "started_at", "finished_at", "where")
REQUIRED_OK = ("best_valid", "test", "history", "config", "split_sizes")
PREDICTION_COLUMNS = ("user", "item", "timestamp", "label", "score")
DIGEST_ROWS = 1 << 16   # rows hashed at once by scored_rows_digest (the whole payload of 0.7 M rows was 0.35 GB)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")   # what a model or dataset name may be


def plain(value):
    """A JSON-safe copy of a config value (enums, devices, tuples, numpy scalars...)."""
    if isinstance(value, np.generic):       # np.float64 is a float subclass: unwrap it first
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return str(value)


def new_run_id() -> str:
    """Unique per run, sortable by start time: two runs started in the same second differ."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def where(device: str | None = None) -> dict:
    """Host, process and (inside a Ray worker) the Ray node id; ray is never imported for this."""
    place = {"host": socket.gethostname(), "pid": os.getpid(), "ray_node_id": None, "device": device}
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        try:
            place["ray_node_id"] = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - a driver outside a job has no node id; the record still stands
            place["ray_node_id"] = None
    return place


def versions(code: str) -> dict:
    """The library versions of this process and ``code``, the code version (``resume_key.code_version``)."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("recbole-mma4ctr", "recbole", "torch", "numpy", "pandas", "scipy", "scikit-learn", "ray"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    found["code"] = code
    return found


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} cores)"


def stem_of(record: dict) -> str:
    return f"{record['model']}-{record['dataset']}-{record['run_id']}"


def validate(record: dict, source: str = "record") -> dict:
    """Refuse a record missing what its status promises; returns it."""
    for field in REQUIRED:
        if field not in record:
            raise RecordError(f"{source}: field {field!r} is missing")
    if record["status"] not in STATUSES:
        raise RecordError(f"{source}: field 'status' is {record['status']!r}, not one of {', '.join(STATUSES)}")
    if record["schema"] != SCHEMA:
        raise RecordError(f"{source}: field 'schema' is {record['schema']!r}; this version reads schema {SCHEMA}")
    for field in ("model", "dataset"):
        value = str(record[field])
        if not NAME.match(value) or ".." in value:
            raise RecordError(f"{source}: field {field!r} is {value!r}, not a plain name (file names are made of it)")
    needed = REQUIRED_OK if record["status"] == "ok" else ("error",) if record["status"] == "failed" else ()
    for field in needed:
        if record.get(field) is None:
            raise RecordError(f"{source}: a {record['status']} record needs field {field!r}")
    return record


def write_record(record: dict, folder, predictions: dict | None = None) -> Path:
    """Validate and write ``record`` (and its predictions first) into ``folder``; returns its path."""
    folder = Path(folder)
    record = plain(record)
    stem = stem_of(record)
    if predictions is not None:
        record["predictions"] = f"{stem}.predictions.npz"
        write_bytes(folder / record["predictions"], predictions_bytes(predictions))
    validate(record, f"{folder / stem}.json")
    path = folder / f"{stem}.json"
    write_bytes(path, json.dumps(record, indent=2).encode())
    return path


def ended_record(base: dict, status: str, seconds: float | None = None, **fields) -> dict:
    """A cell that ended without a result (``failed``, or ``stopped`` by a tune scheduler) as a
    record: the cell's identity plus what is known (the error, the last validation)."""
    record = {"schema": SCHEMA, "status": status, "run_id": base.get("run_id") or new_run_id(),
              "model": base["model"], "dataset": base["dataset"], "kind": base.get("kind", "run"),
              "key": base.get("key"), "identity": base.get("identity"), "cell": base.get("cell"),
              "protocol": base.get("protocol"),
              "started_at": base.get("started_at") or now_iso(), "finished_at": now_iso(),
              "where": base.get("where") or where(), **(base.get("extra") or {}), **fields}
    if seconds is not None:
        record["seconds"] = round(float(seconds), 1)
    return record


def failure_record(base: dict, error: str, seconds: float | None = None) -> dict:
    return ended_record(base, "failed", seconds, error=str(error)[:2000])


def read_record(path) -> dict:
    """A record file, validated (RecordError names the file and the field otherwise)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RecordError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise RecordError(f"{path}: not a record (a JSON object)")
    record = validate(record, str(path))
    record["record_path"] = str(path)
    return record


def records_in(folder, keys=None) -> list[dict]:
    """The valid records of ``folder`` (newest last); with ``keys``, only those with such a key.

    Files that are not records (tables, invalid or foreign JSON) are skipped, never trusted."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            record = read_record(path)
        except (RecordError, OSError):
            continue
        if keys is None or record.get("key") in keys:
            found.append(record)
    found.sort(key=lambda r: (r.get("finished_at") or "", r["run_id"]))
    return found


def latest_by_key(records: list[dict]) -> dict:
    """key -> the newest ok record with it, else the newest record of any status."""
    chosen: dict = {}
    for record in records:
        current = chosen.get(record["key"])
        if current is None or record["status"] == "ok" or current["status"] != "ok":
            chosen[record["key"]] = record
    return chosen


def scored_rows_digest(predictions: dict | None) -> dict | None:
    """Which test rows a run scored, as a fingerprint: the row count and a SHA-256 over the rows'
    (user, item, timestamp, label) in a canonical order (sorted; raw ids as text, timestamps and
    labels as printed numbers). Two records with the same digest scored the same test set, whatever
    order their loaders used; a changed split, filter or label shows up as a different digest."""
    import hashlib

    if not predictions or "label" not in predictions:
        return None
    columns = [np.asarray(predictions[name]) for name in ("user", "item", "timestamp", "label") if name in predictions]
    text = [column.astype(str) for column in columns]
    order = np.lexsort(tuple(reversed(text)))
    digest = hashlib.sha256()
    for first in range(0, len(order), DIGEST_ROWS):   # the payload in parts: the same digest, a bounded peak
        part = order[first:first + DIGEST_ROWS]
        ordered = [column[part].tolist() for column in text]
        digest.update("".join(line + "\n" for line in map("\t".join, zip(*ordered))).encode())   # "u\ti\tt\tl\n" a row
    return {"rows": int(len(order)), "sha256": digest.hexdigest(),
            "columns": [name for name in ("user", "item", "timestamp", "label") if name in predictions]}


def predictions_bytes(predictions: dict) -> bytes:
    """The npz archive of a run's scored test rows (raw user/item ids), as bytes."""
    missing = [column for column in PREDICTION_COLUMNS if column not in predictions]
    if missing:
        raise RecordError(f"predictions: columns {missing} are missing")
    buffer = io.BytesIO()
    arrays = {}
    for name, values in predictions.items():
        values = np.asarray(values)
        arrays[name] = values.astype(str) if values.dtype == object else values  # loadable without pickle
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def read_predictions(record: dict) -> dict | None:
    """The predictions archive a record names (next to the record), or None."""
    name = record.get("predictions")
    if not name:
        return None
    path = Path(record.get("record_path", ".")).parent / Path(name).name
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
