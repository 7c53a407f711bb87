"""Write RecBole atomic files safely, and decide whether a conversion can be skipped.

A conversion writes several files (``.inter``, ``.item``, the modality sidecar, the manifest).
All of them go to temporary names first and are renamed into place only when every one is
complete, manifest last, so an interrupted or failed run never leaves a half-written dataset
that looks finished. The manifest's fingerprint (inputs' names, sizes and modification times,
plus every setting and the converter version) lets an unchanged conversion be skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

CONVERTER_VERSION = "4"  # 4: the authors' WeChat recipe (post padding, bgm after the PCA, 3-part textual), row settings


def log(message: str) -> None:
    """Progress lines go to stderr so that stdout stays for results."""
    print(f"[prepare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fingerprint(input_files: list[Path], settings: dict) -> str:
    digest = hashlib.sha256()
    digest.update(CONVERTER_VERSION.encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted(Path(p) for p in input_files):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def read_json_or_none(path: Path) -> dict | None:
    """A JSON marker file's content, or None when it is missing or unreadable (then: redo the work)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_up_to_date(out_dir: Path, expected_fingerprint: str) -> bool:
    """True when the manifest matches and every file it lists is still there."""
    manifest = read_json_or_none(Path(out_dir) / "manifest.json")
    if manifest is None or manifest.get("fingerprint") != expected_fingerprint:
        return False
    return all((Path(out_dir) / name).exists() for name in manifest.get("files", []))


def read_manifest(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / "manifest.json").read_text())


def _arrow_column(values: np.ndarray):
    """Integers and floats as they are; anything else as text."""
    import pyarrow as pa

    if values.dtype.kind in "iuf":
        return pa.array(values)
    return pa.array([str(value) for value in values], type=pa.string())


class AtomicWriter:
    """Collects the files of one conversion under temporary names; ``commit`` renames them all.

    Use as a context manager: leaving the block with an exception deletes the temporary files
    and leaves whatever was in ``out_dir`` before untouched.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.pending: list[tuple[Path, Path]] = []

    def _temporary(self, name: str) -> Path:
        final = self.out_dir / name
        temporary = self.out_dir / f".{name}.{os.getpid()}.tmp"
        self.pending.append((temporary, final))
        return temporary

    def write_table(self, name: str, frame, types: dict[str, str]) -> None:
        """A RecBole atomic file: tab-separated, typed header (``user_id:token`` ...).

        ``frame`` is a DataFrame or a dict of equal-length columns, in header order. Written by
        pyarrow's CSV writer (7 M rows of integers in about a second, pandas' ``to_csv`` takes
        several), without quoting: a value holding a tab, newline or quote would break RecBole's
        reader, so it is refused with the file and column named instead.
        """
        import pyarrow as pa
        from pyarrow import csv

        columns = {column: np.asarray(frame[column]) for column in (frame.columns if isinstance(frame, pd.DataFrame) else frame)}
        table = pa.table({column: _arrow_column(values) for column, values in columns.items()})
        path = self._temporary(name)
        header = "\t".join(f"{column}:{types[column]}" for column in columns) + "\n"
        with pa.OSFile(str(path), "wb") as sink:
            sink.write(header.encode("utf-8"))
            try:
                csv.write_csv(table, sink, csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))
            except pa.ArrowInvalid as error:
                raise ValueError(f"{self.out_dir / name}: cannot write a value ({error}); "
                                 f"atomic files cannot hold tabs, newlines or quotes") from None

    def write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        path = self._temporary(name)
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    def write_array(self, name: str, array: np.ndarray) -> None:
        path = self._temporary(name)
        with open(path, "wb") as handle:
            np.save(handle, array)

    def write_json(self, name: str, payload: dict) -> None:
        path = self._temporary(name)
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default))

    def commit(self) -> None:
        # The manifest is renamed last: its presence is what marks a conversion complete. The
        # old one goes first, so a crash between renames leaves no manifest, never a stale one.
        try:
            (self.out_dir / "manifest.json").unlink()
        except FileNotFoundError:
            pass
        ordered = sorted(self.pending, key=lambda pair: pair[1].name == "manifest.json")
        for temporary, final in ordered:
            os.replace(temporary, final)
        self.pending = []

    def discard(self) -> None:
        for temporary, _ in self.pending:
            try:
                temporary.unlink()
            except FileNotFoundError:
                pass
        self.pending = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
