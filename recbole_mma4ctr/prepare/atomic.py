"""Write RecBole atomic files safely, and decide whether a conversion can be skipped.

A conversion writes several files (``.inter``, ``.item``, the modality sidecar, the manifest).
All of them go to temporary names first and are renamed into place only when every one is
complete, so an interrupted or failed run never leaves a half-written dataset that looks
finished. The manifest's fingerprint (inputs' names, sizes and modification times, plus every
setting and the converter version) lets an unchanged conversion be skipped.

A folder holds exactly what its manifest lists: the writer fills the manifest's ``files`` with
what it wrote and ``file_digests`` with each file's size and sha256, and a commit removes the
dataset's files that the new manifest does not list (an old ``wechat.oracle.npy`` once the raw
files are real ones). Readers go through ``listed_file``, so a file the manifest does not vouch
for is never taken as part of the dataset; before a run trusts a folder, ``manifest_problem``
checks that its manifest describes it (the dataset's name, every listed file with its recorded
size and digest, no unlisted file of the dataset).

Who may write a folder (``folder_owner``): the project writes only into a folder holding its
manifest, or one that does not exist yet or holds no visible file. A folder with files but no
manifest is somebody's own data: no writer touches it (``check_writable``). The manifest is
therefore renamed into place FIRST on a commit: a crash in the middle leaves the manifest (the
folder stays the project's) next to files that do not match it, which the size and digest
checks catch, so the next run converts again.

Temporary files are named ``.<name>.<pid>.<random>.tmp`` (two processes never share one) and
those left by processes that are no longer alive (a kill -9) are removed by the next writer in
the folder, or by the next conversion that finds the folder up to date
(``remove_dead_temporaries``). ``folder_lock`` serialises the processes preparing one folder (a
lock file beside it): the second waits, then finds the first one's result up to date.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .. import files
from ..errors import InputError, SettingError, UsageError
from ..files import temporary_path
from ..settings import properties_dir, read_yaml
from .digests import file_digests, sha256_of

# 3: manifest counts empty token fields; TikTok user filter by source. 4: settings carry the
# properties/dataset/<name>.yaml key names (label_action, pca_variance, converter_seed). 5: the
# authors' WeChat recipe (post padding, bgm after the PCA, 3-part textual), row settings.
# 6: item_float_seq (the modality vectors as float_seq columns of <name>.item). 7: the manifest
# records each file's size and sha256 (file_digests) and is committed first.
CONVERTER_VERSION = "7"
MANIFEST = "manifest.json"
ACTION_LABEL_PREFIX = "label_"   # action_labels: true writes each action as the column label_<action>


def action_label_field(action: str) -> str:
    """The ``.inter`` column holding ``action`` as a 0/1 label (converter setting ``action_labels``)."""
    return f"{ACTION_LABEL_PREFIX}{action}"


def log(message: str) -> None:
    """Progress lines go to stderr so that stdout stays for results."""
    print(f"[prepare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def dataset_defaults(dataset: str, names) -> dict:
    """The converter settings ``names`` as properties/dataset/<dataset>.yaml sets them: the one
    home of their defaults (the run path reads the same file through RecBole's Config)."""
    path = properties_dir() / "dataset" / f"{dataset}.yaml"
    if not path.is_file():
        raise SettingError(f"{path} not found: it holds the {dataset} converter's settings")
    values = read_yaml(path)
    missing = [name for name in names if name not in values]
    if missing:
        raise SettingError(f"{path}: converter setting(s) {', '.join(missing)} missing (write e.g. "
                           f"'{missing[0]}: ~' to leave one unset)")
    return {name: values[name] for name in names}


def complete_settings(dataset: str, names, given: dict | None) -> dict:
    """``given`` over the yaml's defaults; a name the converter does not know is refused."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UsageError(f"unknown {dataset} converter setting(s) {', '.join(unknown)}; known: {', '.join(names)}")
    return {**dataset_defaults(dataset, names), **given}


def is_integer(value, minimum: int = 0) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def is_share(value) -> bool:
    return isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and 0 < value <= 1


def require(settings: dict, name: str, ok: bool, expected: str) -> None:
    """Refuse a setting whose value cannot work, before anything is read or written."""
    if not ok:
        raise UsageError(f"{name} must be {expected}; got {settings[name]!r}")


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


def read_manifest(folder) -> dict | None:
    """The folder's manifest, or None when it has none; one that is not a JSON object is refused,
    naming the file (and the line), never taken for an empty one."""
    path = Path(folder) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read ({error})") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}, line {error.lineno}: not valid JSON ({error.msg}); the project reads this file "
                         f"as the record of the folder's atomic files: repair or remove it") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: a JSON {type(manifest).__name__}, not the project's manifest (a JSON object)")
    return manifest


# what every manifest a converter wrote has (older versions included)
MANIFEST_KEYS = ("dataset", "fingerprint", "files")


def folder_owner(folder) -> str:
    """``converted`` (it holds a converter's manifest), ``new`` (missing, or no visible file in it)
    or ``user`` (files but no such manifest: somebody's own data, which the project only reads).
    A ``manifest.json`` that is not JSON is refused here (``read_manifest``): whose it is, is unknown."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is not None and all(key in manifest for key in MANIFEST_KEYS):
        return "converted"
    if not folder.is_dir() or not any(not path.name.startswith(".") for path in folder.iterdir()):
        return "new"
    return "user"


def check_writable(folder) -> None:
    """Refuse to write into a folder the project did not create (``folder_owner`` is ``user``)."""
    folder = Path(folder)
    if folder_owner(folder) == "user":
        found = sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))
        raise InputError(f"{folder}: holds files the project did not write ({', '.join(found[:3])}"
                         f"{', ...' if len(found) > 3 else ''}) and no {MANIFEST} of a conversion; the project never "
                         f"writes into it: convert into another folder")


def skip_conversion(out_dir: Path, raw_dir: Path, expected_fingerprint: str, force: bool) -> dict | None:
    """A converter's first step, holding the folder's lock: refuse a folder the project may not
    write, remove dead processes' temporary files, and return the manifest when the folder is up
    to date (same fingerprint, every listed file there with its recorded size: the conversion is
    then skipped), else None. The digests are compared by the run path (``manifest_problem``
    with the digest cache), where a mismatch converts again too."""
    check_writable(out_dir)
    remove_dead_temporaries(out_dir)
    manifest = read_manifest(out_dir)
    if force or manifest is None or manifest.get("fingerprint") != expected_fingerprint:
        return None
    problem = manifest_problem(out_dir, manifest, manifest.get("dataset"))
    if problem is not None:
        log(f"{problem}: converting again")
        return None
    log(f"{out_dir} is up to date with {raw_dir} (fingerprint {expected_fingerprint[:12]}); skipping conversion")
    return manifest


def manifest_problem(folder, manifest: dict, name: str, digest_cache=None) -> str | None:
    """Why ``manifest`` does not describe ``folder`` (the atomic files of dataset ``name``), or
    None: another dataset's manifest, a listed file missing or of another size, a file of the
    dataset it does not list, and (with ``digest_cache``, see ``digests.file_digests``) a file
    whose sha256 is not the recorded one. One line naming the file."""
    folder = Path(folder)
    where = folder / MANIFEST
    if manifest.get("dataset") != name:
        return f"{where}: describes dataset {manifest.get('dataset')!r}, not this folder's {name!r}"
    recorded = manifest.get("file_digests")
    if not isinstance(recorded, dict) or not recorded:
        return f"{where}: records no file sizes and digests (written by an older converter)"
    for path in sorted(folder.iterdir()):
        if path.name.startswith(f"{name}.") and path.name not in recorded and path.is_file():
            return f"{path}: a file of dataset {name} that {where} does not list"
    for file_name, expected in sorted(recorded.items()):
        path = folder / file_name
        if not path.is_file():
            return f"{path}: listed in {where} but missing"
        if path.stat().st_size != expected.get("bytes"):
            return f"{path}: {path.stat().st_size:,} bytes, but {where} records {expected.get('bytes'):,}"
    if digest_cache is None:
        return None
    found = file_digests([folder / file_name for file_name in sorted(recorded)], digest_cache)
    for file_name, expected in sorted(recorded.items()):
        if found[str(folder / file_name)] != expected.get("sha256"):
            return f"{folder / file_name}: its content is not what {where} records (sha256 differs)"
    return None


def listed_file(folder, name: str) -> Path | None:
    """``folder/name`` when the folder's manifest lists it and it is there, else None.

    The one way readers (comparison, report) find a dataset's side files: a file the manifest
    does not list (left by an older conversion, or put there by hand) is not part of the data.
    A folder without a manifest (a bring-your-own dataset) has no listed side files."""
    manifest = read_json_or_none(Path(folder) / MANIFEST)
    if not isinstance(manifest, dict) or name not in (manifest.get("files") or []):
        return None
    path = Path(folder) / name
    return path if path.is_file() else None


def remove_dead_temporaries(folder) -> list[str]:
    """The writer's clean-up of dead processes' temporary files, with this module's progress log."""
    return files.remove_dead_temporaries(folder, log)


_HELD: dict[str, list] = {}  # folder -> [open lock file, depth]: this process's locks (reentrant)
_HELD_GUARD = threading.Lock()


def lock_path(folder) -> Path:
    """``<parent>/.<folder>.lock``: beside the folder, so the folder itself holds only its files."""
    folder = Path(os.path.realpath(folder))
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def folder_lock(folder):
    """Hold an exclusive ``flock`` on ``lock_path(folder)`` (the parent folder is created).

    Another process preparing the same folder waits here; this process may nest the lock (the
    generator called from ``raw_source`` takes it again). The kernel releases it when a holder
    dies, so a killed run never leaves the folder locked."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path)
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            handle = None
        else:
            handle = open(path, "a+b")
    if handle is not None:
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                log(f"waiting for another process preparing {folder}")
                fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        with _HELD_GUARD:
            _HELD[key] = [handle, 1]
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD[key][1] -= 1
            release = _HELD[key][0] if _HELD[key][1] == 0 else None
            if release is not None:
                del _HELD[key]
        if release is not None:
            fcntl.flock(release, fcntl.LOCK_UN)
            release.close()


def float_seq_column(matrix: np.ndarray):
    """A RecBole ``float_seq`` column: each row's float32 values, space-separated (RecBole's
    ``seq_separator``), each the shortest text that reads back as the same float32 (pyarrow's
    float-to-string cast); built column-wise by pyarrow, never row by row in Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    rows, width = matrix.shape
    if not np.isfinite(matrix).all():
        raise ValueError("a float_seq column cannot hold NaN or infinite values")
    values = pc.cast(pa.array(matrix.ravel()), pa.string())
    offsets = pa.array(np.arange(rows + 1, dtype=np.int64) * width)
    return pc.binary_join(pa.LargeListArray.from_arrays(offsets, values), " ")


def item_float_seq(item_columns: dict, item_types: dict, matrices: dict, on: bool) -> tuple[dict, dict]:
    """The ``.item`` columns and types, plus (``item_float_seq: true``) one ``<modality>:float_seq``
    column per modality matrix, rows aligned with the item ids, so stock RecBole reads the same
    vectors as ``<name>.mm.npz`` (``load_col: {item: [item_id, visual, ...]}``)."""
    if not on:
        return item_columns, item_types
    clash = sorted(set(matrices) & set(item_columns))
    if clash:
        raise ValueError(f"item_float_seq: modality names {clash} are already .item columns")
    return ({**item_columns, **{name: float_seq_column(matrix) for name, matrix in matrices.items()}},
            {**item_types, **{name: "float_seq" for name in matrices}})


def _arrow_column(values):
    """Integers and floats as they are; a pyarrow array (``float_seq_column``) as it is; anything else as text."""
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if values.dtype.kind in "iuf":
        return pa.array(values)
    return pa.array([str(value) for value in values], type=pa.string())


class AtomicWriter:
    """Collects the files of one conversion under temporary names; ``commit`` renames them all.

    Use as a context manager: leaving the block with an exception deletes the temporary files
    and leaves whatever was in ``out_dir`` before untouched. Temporary files of stopped
    processes found in the folder are removed first.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        check_writable(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(self.out_dir)
        self.pending: list[tuple[Path, Path]] = []

    def _temporary(self, name: str) -> Path:
        final = self.out_dir / name
        temporary = temporary_path(final)
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

        columns = {column: frame[column] if isinstance(frame[column], (pa.Array, pa.ChunkedArray)) else np.asarray(frame[column])
                   for column in (frame.columns if isinstance(frame, pd.DataFrame) else frame)}
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

    def write_manifest(self, payload: dict) -> None:
        """The manifest, last, its ``files`` being exactly the files this writer wrote and its
        ``file_digests`` their sizes and sha256 (read back from the temporary files)."""
        payload["files"] = sorted(final.name for _, final in self.pending)
        payload["file_digests"] = {final.name: {"bytes": temporary.stat().st_size, "sha256": sha256_of(temporary)}
                                   for temporary, final in sorted(self.pending, key=lambda pair: pair[1].name)}
        self.write_json(MANIFEST, payload)

    def commit(self) -> None:
        # The manifest is renamed first: it keeps the folder the project's (``folder_owner``)
        # through a crash between renames, and its sizes and digests then tell the files left
        # over from the new ones. Then the dataset's files the new manifest does not list go
        # (only names of the dataset's own ``<name>.*`` family: anything else in the folder is
        # not ours to delete).
        ordered = sorted(self.pending, key=lambda pair: pair[1].name != MANIFEST)
        for temporary, final in ordered:
            files.move_into_place(temporary, final)
        written = {final.name for _, final in self.pending}
        self.pending = []
        families = {name.split(".")[0] + "." for name in written if name != MANIFEST}
        for path in self.out_dir.iterdir():
            if path.name not in written and path.name.startswith(tuple(families)) and path.is_file():
                log(f"removing {path}: the new manifest does not list it")
                path.unlink(missing_ok=True)

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
