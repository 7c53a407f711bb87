"""Built datasets kept on disk, so a cell whose dataset was built before maps it instead of building it.

A cell's dataset (``utils.create_dataset``, then ``build()``: RecBole's read of the atomic files,
the remap, the split, the project's features, profiles and leave-one-out terms) is the same for
every cell with the same inputs, and at full WeChat scale it takes most of a short cell. After a
cell builds it, the parent dataset and its three splits are written to ``prepared_store``
(``properties/overall.yaml``; ``~`` or ``false``: off) by ``object_files`` (arrays as ``.npy``,
the rest as tagged JSON, no pickle); a later cell with the same inputs maps them back
(``np.load(mmap_mode="c")``), so nothing is copied until touched and cells on one machine share
the pages.

Reused only for the same content (the project's trust rule: same data, same settings, same
code). An entry is found under a bucket, the sha256 of

- the data: the sha256 of every file the cell reads (``prepare.sources.data_digests``);
- the code: the package's code version and the library versions (``record.versions``);

and matches only when every setting the build read has the same value now (``config_reads``:
the reads are recorded while the first build runs, so a learning rate the build never reads
does not separate two cells, a ``profile_length`` it reads does), and, when the build drew from
the random generators (torch's, numpy's global, Python's, which ``init_seed`` sets from the
seed), only when they start from the same state now. A build that drew nothing left them as
they were, so its output does not depend on them: cells of other seeds share its entry (a
comparison's seeds, a tune's trials). Deterministic code, the same data, the same values read
and, where drawn from, the same starting random state give the same dataset. Then the entry's
effects are put back as the build would have left them: the settings the build wrote
(``config_reads.replay``) and, when it drew, the random states right after the build, so the
cell goes on exactly as one that built it (``tests/data/test_prepared_store.py`` checks the test
scores bit for bit, across seeds too).

An entry is written into a temporary folder and renamed into place once complete; on reading,
every file's size is checked and any error (a truncated or edited file, an unknown tag or class:
``object_files.ObjectFileError``) removes the entry, which is then built and written again. A
dataset holding a value ``object_files`` does not write is built as usual, not stored (one log
line). Cells building the same model on the same bucket wait for each other (a lock per
bucket and model), so a tune's first trials build once. The store keeps the
``prepared_store_keep`` most recently used entries and removes older ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path
from time import time
from typing import NamedTuple

import numpy as np
import torch

from ..compat import release_unused_memory
from ..errors import OutputError, SettingError
from ..files import move_into_place, pid_alive, temporary_path, TEMPORARY, write_bytes
from ..prepare.atomic import folder_lock
from ..prepare.sources import data_digests
from ..record import versions
from ..resume_key import code_version
from ..settings import setting
from ..utils import create_dataset
from .config_reads import recording_reads, replay, same_reads
from .object_files import CLASSES, ObjectFileError, read_graph, Unsupported, write_graph

ENTRY_FILE = "entry.json"
ENTRY_FORMAT = 2  # 2: the random state keys an entry only when its build drew from it
OFF = (None, False, "", "false", "False", "~", "none", "None", "off")


class Prepared(NamedTuple):
    """A cell's dataset and its splits; ``source``: ``store`` (mapped from ``key``), ``built``
    (and stored as ``key``), or why it was built and not stored; ``seconds``: the time it took."""

    dataset: object
    splits: list
    source: str
    key: str | None
    seconds: float


def store_folder(config) -> Path | None:
    """The ``prepared_store`` folder, or None when the store is off."""
    value = setting(config, "prepared_store")
    return None if value in OFF else Path(str(value))


def entries_kept(config) -> int:
    keep = setting(config, "prepared_store_keep")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise SettingError(f"prepared_store_keep must be a whole number >= 1, got {keep!r}")
    return keep


def random_states() -> dict:
    """torch's, numpy's global and Python's random states (what a build may draw from)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_random_states(states: dict) -> None:
    torch.set_rng_state(states["torch"].clone())
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((str(kind), np.array(keys, dtype=np.uint32), int(position), int(has_gauss), float(cached)))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def random_digest() -> str:
    states = random_states()
    digest = hashlib.sha256(states["torch"].numpy().tobytes())
    kind, keys, position, has_gauss, cached = states["numpy"]
    digest.update(keys.tobytes())
    digest.update(repr((kind, position, has_gauss, cached, states["python"])).encode())
    return digest.hexdigest()


def bucket_of(config) -> str:
    """The sha256 (16 hex) of the data and the code (module docstring)."""
    payload = json.dumps({"format": ENTRY_FORMAT, "data": data_digests(config), "versions": versions(code_version())},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepared_datasets(config) -> Prepared:
    """The cell's dataset and splits: mapped from the store when an entry matches, else built
    (``create_dataset`` + ``build``) and stored."""
    begun = time()
    folder = store_folder(config)
    if folder is None:
        dataset = create_dataset(config)
        splits = dataset.build()
        release_unused_memory()     # the build's temporaries (profiles, pooling, sorting)
        return Prepared(dataset, splits, "built (prepared_store off)", None, time() - begun)
    keep = entries_kept(config)
    bucket = bucket_of(config)
    with folder_lock(folder / f"{bucket}-{config['model']}"):
        found = _lookup(folder, bucket, config)
        if found is not None:
            dataset, splits, key = found
            return Prepared(dataset, splits, "store", key, time() - begun)
        random_start = random_digest()
        with recording_reads(config) as recorded:
            dataset = create_dataset(config)
            splits = dataset.build()
        release_unused_memory()
        drawn = random_start if random_digest() != random_start else None
        key, source = _store(folder, bucket, config, dataset, splits, recorded, drawn)
        if key is not None:
            _evict(folder, keep)
    return Prepared(dataset, splits, source, key, time() - begun)


@contextmanager
def built_splits(prepared: Prepared):
    """While open, ``prepared.dataset.build()`` returns the splits already built, so RecBole's
    ``data_preparation`` makes its samplers and dataloaders from them."""
    dataset = prepared.dataset
    dataset.build = lambda: prepared.splits
    try:
        yield
    finally:
        del dataset.build


def _log(message: str) -> None:
    logging.getLogger().info(f"prepared store: {message}")


def _lookup(folder: Path, bucket: str, config):
    """(dataset, splits, key) of the entry of ``bucket`` that matches ``config``, or None."""
    if not folder.is_dir():
        return None
    for entry in sorted(folder.glob(f"{bucket}-*")):
        if not entry.is_dir():
            continue
        try:
            meta = json.loads((entry / ENTRY_FILE).read_text(encoding="utf-8"))
            if meta.get("format") != ENTRY_FORMAT or meta.get("bucket") != bucket:
                continue
            if not same_reads(config, meta["reads"], meta["everything"], meta["writes"]):
                continue
            if meta["random_start"] is not None and meta["random_start"] != random_digest():
                continue
            for name, size in meta["files"].items():
                if Path(name).name != name or (entry / name).stat().st_size != size:
                    raise ObjectFileError(f"{name} is not the size it was written with")
            roots = read_graph(entry, config)
            dataset, splits = roots["dataset"], roots["splits"]
            if not all(type(d).__name__ in CLASSES and hasattr(d, "inter_feat") for d in [dataset, *splits]):
                raise ObjectFileError("the roots are not datasets")
            replay(config, roots["writes"])
            if meta["random_start"] is not None:
                set_random_states(roots["random"])
        except (ObjectFileError, OSError, ValueError, KeyError, TypeError) as error:
            _log(f"{entry.name} cannot be read ({type(error).__name__}: {error}); removed, building again")
            shutil.rmtree(entry, ignore_errors=True)
            continue
        os.utime(entry)                       # its last use: the store keeps the most recent ones
        _log(f"{type(dataset).__name__} and its splits mapped from {entry}")
        return dataset, splits, entry.name
    return None


def _store(folder: Path, bucket: str, config, dataset, splits, recorded, random_start) -> tuple[str | None, str]:
    """Write the built dataset as an entry; returns (its key, the source to record).

    ``random_start``: the digest of the random states the build started from when it drew from
    them (then the states after it are stored too), else None (the entry serves every seed)."""
    reads = {"reads": recorded.reads, "everything": recorded.everything, "writes": sorted(recorded.writes),
             "class": type(dataset).__name__, "random_start": random_start}
    key = f"{bucket}-{hashlib.sha256(json.dumps(reads, sort_keys=True).encode()).hexdigest()[:16]}"
    final = folder / key
    if final.is_dir():
        return key, "built"
    _remove_dead_temporaries(folder)
    temporary = temporary_path(final)
    try:
        temporary.mkdir(parents=True)
        roots = {"dataset": dataset, "splits": splits, "writes": recorded.writes}
        if random_start is not None:
            roots["random"] = random_states()
        sizes = write_graph(temporary, roots, config)
        meta = {"format": ENTRY_FORMAT, "bucket": bucket, **reads, "files": sizes}
        write_bytes(temporary / ENTRY_FILE, json.dumps(meta, indent=1, sort_keys=True).encode())
        move_into_place(temporary, final)
    except Unsupported as error:
        _log(f"{type(dataset).__name__} is not stored ({error} is not a value it writes); built as usual")
        return None, f"built (not stored: {error})"
    except (OutputError, OSError) as error:
        _log(f"{final} could not be written ({error}); built as usual")
        return None, f"built (not stored: {error})"
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    _log(f"{type(dataset).__name__} and its splits stored in {final}")
    return key, "built"


def _entries(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_dir() and not TEMPORARY.match(path.name)]


def _evict(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used entries (a process still mapping a removed
    entry's files keeps reading them: the system frees them when the last mapping goes)."""
    entries = sorted(_entries(folder), key=lambda path: path.stat().st_mtime, reverse=True)
    for path in entries[keep:]:
        shutil.rmtree(path, ignore_errors=True)
        _log(f"removed {path.name} (prepared_store_keep: {keep})")


def _remove_dead_temporaries(folder: Path) -> None:
    """Temporary entry folders of processes that no longer exist (killed while writing)."""
    for path in folder.iterdir() if folder.is_dir() else []:
        match = TEMPORARY.match(path.name)
        if match and path.is_dir() and int(match["pid"]) != os.getpid() and not pid_alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
