"""What makes two runs "the same": the resume key of a cell.

A finished cell is skipped on a rerun when a record with the same key exists. The key is a hash
of everything that decides the effective configuration: the model, the dataset, the contents of
the user's config files and the ``--key=value`` settings (minus the settings that only place
files or pick a device), the epoch marks, the data's fingerprint (from the converter's manifest)
and the code version (a hash of the package's own source and properties files, which hold every
default). File names, ``gpu_id``, result folders and thread counts never
enter it, so a comparison split by hand over machines, or moved to another folder, resumes.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from .cells import layered_settings
from .settings import properties_dir

# Settings that decide where files go, which device runs, or how progress is shown: not results.
PLUMBING = frozenset({
    "gpu_id", "device", "use_gpu", "local_rank", "world_size", "ip", "port", "nproc", "offset", "single_spec",
    "checkpoint_dir", "results_dir", "data_path", "raw_root", "synthetic_root", "show_progress", "log_wandb",
    "wandb_project", "state", "torch_threads", "shuffle", "record_stem", "save_dataset", "save_dataloaders",
    "dataset_save_path", "dataloaders_save_path",
})


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (16 hex) over the package's .py files and its properties (clone or wheel alike)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    files = sorted(package.rglob("*.py")) + sorted(p for p in properties_dir().rglob("*") if p.is_file())
    for path in files:
        if "__pycache__" in path.parts:
            continue
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cell_key(cell: dict, data_fingerprint=None) -> str:
    """The resume key of one cell (see the module docstring): model, dataset, the merged user
    layers (config file contents, then settings) minus plumbing, marks, data and code version.
    The properties files are part of the code version, so this fixes the effective config."""
    settings = {k: v for k, v in layered_settings(cell).items() if k not in PLUMBING}
    payload = json.dumps({"model": cell["model"], "dataset": cell["dataset"], "settings": settings,
                          "marks": cell.get("marks"), "data": data_fingerprint, "code": code_version()},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]
