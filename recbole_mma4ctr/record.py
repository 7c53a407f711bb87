"""The result record: one JSON file per run, the only thing tables, plots and reports read.

Written atomically (temporary name, then rename). Holds the model, dataset, effective config
(plain values only), best-valid and test metrics, per-epoch history, epochs run, train and
test seconds, trainable parameters, device, data provenance and library versions.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from enum import Enum
from pathlib import Path


def plain(value):
    """A JSON-safe copy of a config value (enums, devices, tuples, numpy scalars...)."""
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


def versions() -> dict:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("recbole-mma4ctr", "recbole", "torch", "numpy", "pandas", "scipy", "scikit-learn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=5)
        found["git_commit"] = commit.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        found["git_commit"] = None
    return found


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} cores)"


def write_record(record: dict, results_dir, stem: str) -> Path:
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    temporary = folder / f".{stem}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(plain(record), indent=2, sort_keys=False))
    os.replace(temporary, path)
    return path


def run_stem(model: str, dataset: str) -> str:
    return f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
