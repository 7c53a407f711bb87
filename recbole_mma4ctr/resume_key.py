"""What makes two runs "the same": a cell's identity, and its resume key.

A finished cell is skipped on a rerun when a record with the same key exists, so the key must
change whenever the result could. It is a hash of three things (``cell_identity``):

- the effective configuration: RecBole's final config dict as the project builds it for the cell
  (properties files, protocol, the user's config files, ``--key=value`` settings, the epoch
  marks), every key of it except ``PLUMBING``, plus the model as named (``DIN+mm``), the marks
  and a missing-modality evaluation the cell asks for (``robustness``);
- the data: the sha256 of every file the run reads (``prepare.sources.data_digests``), by name,
  for generated, converted and bring-your-own data alike;
- the code version: a hash of the package's own source and properties files.

``PLUMBING`` is the explicit list of keys that cannot change a result: where files are read or
written (the data's content is in the digests instead), which device runs, how progress and logs
are shown, how many threads. Everything else is in the key, ``shuffle`` included.
``tests/test_identity.py`` changes every other key of the effective config and checks that the
key changes, and changes each plumbing key and checks that it does not. So a comparison moved to
another folder, or split by hand over machines with other paths and GPUs, resumes; a rerun on
edited data or with another setting runs again.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from .record import plain
from .settings import properties_dir

# Keys of the effective config that cannot change a result, each with the reason.
PLUMBING = {
    # where files are: the content read is in the data digests, what is written is not an input
    "data_path": "the data folder; its files' content is in the data digests",
    "raw_root": "where raw files are looked for; the converted files' content is in the data digests",
    "synthetic_root": "where a generated sample is written; the converted files' content is in the data digests",
    "checkpoint_dir": "where checkpoints are written",
    "results_dir": "where records are written",
    "digest_cache": "where the digest cache is kept",
    "prepared_store": "where built datasets are kept; an entry is reused only where the build would give the same",
    "prepared_store_keep": "how many built datasets the prepared store keeps",
    "dataset_save_path": "where RecBole may save the dataset",
    "dataloaders_save_path": "where RecBole may save the dataloaders",
    "save_dataset": "whether RecBole saves the dataset to a file",
    "save_dataloaders": "whether RecBole saves the dataloaders to a file",
    "record_stem": "a record's file name",
    # which device and process runs it
    "gpu_id": "which GPU",
    "device": "the torch device RecBole derives from gpu_id",
    "use_gpu": "RecBole's flag derived from gpu_id",
    "local_rank": "the process's rank in distributed training",
    "world_size": "the number of distributed processes",
    "nproc": "the number of distributed processes",
    "ip": "the distributed master's address",
    "port": "the distributed master's port",
    "offset": "the distributed process offset",
    "single_spec": "RecBole's flag for a single-process run",
    "torch_threads": "torch intra-op threads (parallel cells get 1 each)",
    "worker": "dataloader worker processes",
    # how progress and logs are shown
    "show_progress": "progress bars",
    "state": "the log level",
    "log_wandb": "logging to Weights & Biases",
    "wandb_project": "the Weights & Biases project name",
}


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


def identity_settings(config) -> dict:
    """The effective config's keys that decide a result (all but ``PLUMBING``), JSON-safe."""
    values = getattr(config, "final_config_dict", config)
    return {str(key): plain(value) for key, value in values.items() if key not in PLUMBING}


def cell_identity(cell: dict, config, data_digests: dict) -> dict:
    """A cell's identity as its record states it: ``key`` (20 hex), ``data`` (the digests) and
    ``code`` (the code version). ``config`` is the cell's effective config (``cells.cell_config``)."""
    code = code_version()
    payload = json.dumps({"model": cell["model"], "marks": cell.get("marks"), "config": identity_settings(config),
                          "data": data_digests, "code": code,
                          **({"robustness": cell["robustness"]} if cell.get("robustness") else {})},
                         sort_keys=True, default=str)
    return {"key": hashlib.sha256(payload.encode()).hexdigest()[:20], "data": dict(data_digests), "code": code}
