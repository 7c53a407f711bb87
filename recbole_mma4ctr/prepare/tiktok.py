"""TikTok ICME 2019 track 1 raw files -> RecBole atomic files plus modality matrices.

Inputs (``RAW_DIR``, the paper's ``dataset/TikTok2019ICME/track1/``; formats in docs/data.md):

- ``final_track1_train.txt``: tab-separated, no header, 12 integer columns ``uid user_city item_id
  author_id item_city channel finish like music_id device time duration_time`` (19 GB on the
  real data, 275,855,531 rows);
- ``track1_video_features_part1.txt`` .. ``part11.txt`` and ``track1_audio_features_part1.txt`` ..
  ``part4.txt``: JSON lines with an ``item_id`` and a list of up to 128 floats (a shorter list is
  zero-padded, as the authors did, and counted);
- ``track1_title.txt``: JSON lines with an ``item_id`` and ``title_features``, a
  ``{"<word id>": count}`` object;
- ``oracle_prob.csv`` (generated samples only): each train row's true ``p_finish``, ``p_like``.

The train file is streamed in chunks of ``chunk_rows`` rows, in two passes, so memory does not
grow with its size:

1. pass 1 reads the ``uid`` column only and counts rows per user;
2. pass 2 reads every column, checks it, counts both labels over all rows, and keeps only the
   rows of users with at least ``min_user_interactions`` rows (the paper: 4,000 on the real data,
   which keeps 1,678 users and 8,622,897 rows), with their items' author and duration.

Memory then holds the per-user counts, one chunk, and the kept rows (about 30 bytes a row). The
feature files are streamed line by line and only the kept items' vectors are held.

Outputs (``OUT_DIR``):

- ``tiktok.inter``: ``user_id:token item_id:token timestamp:float label:float device:float``.
  Rows are written in chronological order (by ``time``, file order among equal times) and
  ``timestamp`` is the row's position in that order (0, 1, 2 ...): RecBole stores floats as
  float32, exact for integers up to 2**24, and ``time`` values repeat, so positions keep the
  split deterministic and exact (as in ``wechat.py``). ``label`` is ``like`` (the paper's main
  results) or ``finish`` (setting ``label_action``); ``action_labels: true`` adds both as 0/1
  columns ``label_finish:float`` and ``label_like:float`` for the multi-task models
  (``multitask.py``; RecBole reads only the columns its ``load_col`` names).
- ``tiktok.item``: ``item_id:token author_id:token duration:float`` (first row's values).
- ``tiktok.mm.npz``: ``item_id`` (raw ids as str) and float32 ``visual``, ``acoustic``,
  ``textual`` matrices, rows aligned with ``item_id`` (sorted ids).
- ``tiktok.oracle.npy``: only when ``oracle_prob.csv`` is present (generated samples): float32,
  the true probability of the chosen label for each ``tiktok.inter`` row, in its order.
- ``manifest.json``: fingerprint, settings, rows, dropped rows and why, label rates of both
  labels, items without each modality, modality widths and how each was reduced.

The paper's item recipe (docs/protocols.md): visual = the 128-d video vector, PCA keeping
``pca_variance`` (90 %; 71 dims on the real data); acoustic = the 128-d audio vector, PCA to
``acoustic_dim`` (10); textual = title word counts, a sparse bag of words over word ids, PCA keeping ``pca_variance`` (22
dims on the real data). Every PCA is centred PCA, the word counts staying a sparse matrix:
exact ``covariance_eigh`` up to ``COVARIANCE_MAX_WORDS`` columns (memory near the input's), else
ARPACK with implicit centring and more components until the variance share is reached; the
manifest says which (``modality_methods``). Fixed
widths ``visual_dim`` / ``acoustic_dim`` / ``textual_dim`` replace the variance share (71/10/22
give the paper's 103). An item without a line in a modality's files gets a zero raw vector
(counted). Every reduced column is then min-max scaled to [0, 1].
"""

from __future__ import annotations

import json
import re
import time
import warnings
from array import array
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, MissingInputError, RawFormatError
from ..fusion import minmax_scale
from .atomic import (action_label_field, ACTION_LABEL_PREFIX, AtomicWriter, complete_settings, fingerprint,
                     folder_lock, is_integer, is_share, item_float_seq, log, read_json_or_none, require,
                     skip_conversion)
from .rawtext import decode_line

TRAIN_FILE = "final_track1_train.txt"
TRAIN_COLUMNS = ("uid", "user_city", "item_id", "author_id", "item_city", "channel", "finish", "like",
                 "music_id", "device", "time", "duration_time")
VIDEO_FILES = tuple(f"track1_video_features_part{i}.txt" for i in range(1, 12))
AUDIO_FILES = tuple(f"track1_audio_features_part{i}.txt" for i in range(1, 5))
TITLE_FILE = "track1_title.txt"
ORACLE_FILE = "oracle_prob.csv"
VIDEO_KEY = "video_feature_dim_128"
AUDIO_KEY = "audio_feature_128_dim"
TITLE_KEY = "title_features"
FEATURE_DIM = 128
LABELS = ("like", "finish")
PAPER_MIN_USER_INTERACTIONS = 4_000
COVARIANCE_MAX_WORDS = 4_096
# The converter's settings: the keys of properties/dataset/tiktok.yaml that hold their defaults.
SETTINGS = ("label_action", "min_user_interactions", "pca_variance", "visual_dim", "acoustic_dim", "textual_dim",
            "chunk_rows", "converter_seed", "item_float_seq", "action_labels")
# Settings that change how the work is done, not its result (left out of the fingerprint).
_NO_EFFECT_SETTINGS = ("chunk_rows",)
_EXTRA = "_extra_column"
_INTEGER = re.compile(r"-?\d+")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_BATCH_LINES = 8_192


def required_files(raw_dir: Path) -> list[Path]:
    raw_dir = Path(raw_dir)
    return [raw_dir / name for name in (TRAIN_FILE,) + VIDEO_FILES + AUDIO_FILES + (TITLE_FILE,)]


def has_raw_files(raw_dir: Path) -> bool:
    """True when the train file is there; a missing feature file then stops the conversion by name."""
    return (Path(raw_dir) / TRAIN_FILE).exists()


def _fail(path: Path, line: int, field: str, why: str, value=None) -> RawFormatError:
    shown = "" if value is None else f" (value {str(value)[:60]!r})"
    return RawFormatError(f"{path}, line {line}, field '{field}': {why}{shown}")


# ----------------------------------------------------------------------------------------
# final_track1_train.txt
# ----------------------------------------------------------------------------------------


def _diagnose_train(path: Path, first_line: int, error: Exception) -> RawFormatError:
    """Find the first bad line at or after ``first_line`` (only runs when the fast reader failed)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if number < first_line:
                continue
            text = decode_line(path, number, raw, list(TRAIN_COLUMNS), b"\t")
            cells = text.rstrip("\r\n").split("\t")
            if len(cells) != len(TRAIN_COLUMNS):
                return RawFormatError(f"{path}, line {number}: expected {len(TRAIN_COLUMNS)} tab-separated "
                                      f"columns, found {len(cells)}")
            for name, cell in zip(TRAIN_COLUMNS, cells):
                if not _INTEGER.fullmatch(cell.strip()):
                    return _fail(path, number, name, "expected an integer", cell)
                if not INT64_MIN <= int(cell) <= INT64_MAX:
                    return _fail(path, number, name, "integer out of range (beyond 64-bit)", cell.strip())
    return RawFormatError(f"{path}, from line {first_line}: cannot be read as {len(TRAIN_COLUMNS)} integer "
                          f"columns ({error})")


def train_chunks(path: Path, chunk_rows: int, columns=None):
    """Yield (first line number, DataFrame of int64 columns) chunk by chunk.

    ``columns`` None reads every column and checks the column count (a 13th field is caught
    through an extra, normally empty, column); a subset reads only those columns, fast.
    """
    every = columns is None
    names = list(TRAIN_COLUMNS) + ([_EXTRA] if every else [])
    dtype = {name: np.int64 for name in (TRAIN_COLUMNS if every else columns)}
    if every:
        dtype[_EXTRA] = np.float64
    first = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        try:  # the reader parses its first buffer at once: bad bytes there fail here
            reader = pd.read_csv(path, sep="\t", header=None, names=names, usecols=None if every else list(columns),
                                 dtype=dtype, index_col=False, chunksize=int(chunk_rows), skip_blank_lines=False,
                                 engine="c")
        except (ValueError, OverflowError, pd.errors.ParserError) as error:
            raise _diagnose_train(path, first, error) from None
        with reader:
            while True:
                try:
                    frame = next(reader)
                except StopIteration:
                    return
                except (ValueError, OverflowError, pd.errors.ParserError) as error:
                    raise _diagnose_train(path, first, error) from None
                if every:
                    extra = frame[_EXTRA].notna().to_numpy()
                    if extra.any():
                        raise _diagnose_train(path, first + int(np.flatnonzero(extra)[0]), "extra column")
                yield first, frame
                first += len(frame)


def _check_binary(path: Path, first: int, frame: pd.DataFrame) -> None:
    for name in ("finish", "like"):
        values = frame[name].to_numpy()
        bad = (values != 0) & (values != 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise _fail(path, first + row, name, "expected 0 or 1", values[row])


def count_user_rows(path: Path, chunk_rows: int) -> tuple[pd.Series, int]:
    """Pass 1: rows per uid (index sorted) and the total number of rows."""
    counts = pd.Series(dtype=np.float64)
    n_rows = 0
    for _, frame in train_chunks(path, chunk_rows, ("uid",)):
        counts = counts.add(frame["uid"].value_counts(), fill_value=0)
        n_rows += len(frame)
    return counts.astype(np.int64).sort_index(), n_rows


def _oracle_chunks(path: Path, label: str, chunk_rows: int):
    column = f"p_{label}"
    with pd.read_csv(path, usecols=[column], dtype=np.float64, chunksize=int(chunk_rows)) as reader:
        for frame in reader:
            yield frame[column].to_numpy()


# The kept rows' columns: (train column, dtype), filled into arrays sized by pass 1.
KEPT_COLUMNS = {"user_id": ("uid", np.int64), "item_id": ("item_id", np.int64), "time": ("time", np.int64),
                "finish": ("finish", np.int8), "like": ("like", np.int8), "device": ("device", np.int64)}


def keep_rows(path: Path, kept_users: np.ndarray, n_kept: int, settings: dict, oracle_path: Path | None) -> dict:
    """Pass 2: check every row, count labels, keep the kept users' rows (and their oracle values).

    The kept rows go into arrays of the size pass 1 counted (``n_kept``), so no chunk list is
    concatenated; the item table is de-duplicated chunk by chunk (bounded by the item count).
    """
    label = settings["label_action"]
    oracle = _oracle_chunks(oracle_path, label, settings["chunk_rows"]) if oracle_path else None
    kept = {name: np.empty(n_kept, dtype=dtype) for name, (_, dtype) in KEPT_COLUMNS.items()}
    kept_oracle = np.empty(n_kept, dtype=np.float32) if oracle is not None else None
    items = pd.DataFrame({"item_id": np.zeros(0, np.int64), "author_id": np.zeros(0, np.int64),
                          "duration_time": np.zeros(0, np.int64)})
    positives = {name: 0 for name in LABELS}
    n_rows = filled = 0
    for first, frame in train_chunks(path, settings["chunk_rows"]):
        _check_binary(path, first, frame)
        for name in LABELS:
            positives[name] += int(frame[name].sum())
        n_rows += len(frame)
        keep = np.isin(frame["uid"].to_numpy(), kept_users)
        end = filled + int(keep.sum())
        if end > n_kept:
            raise RawFormatError(f"{path}: changed while it was read (more rows of the kept users than pass 1 counted)")
        for name, (column, dtype) in KEPT_COLUMNS.items():
            kept[name][filled:end] = frame[column].to_numpy()[keep]
        chunk_items = frame.loc[keep, ["item_id", "author_id", "duration_time"]].drop_duplicates("item_id")
        items = pd.concat([items, chunk_items[~chunk_items["item_id"].isin(items["item_id"])]], ignore_index=True)
        if oracle is not None:
            values = next(oracle, np.zeros(0))
            if len(values) != len(frame):
                raise RawFormatError(f"{oracle_path}: fewer rows than {path.name} (from line {first + len(values) + 1})")
            kept_oracle[filled:end] = values[keep]
        filled = end
    if oracle is not None and len(next(oracle, np.zeros(0))):
        raise RawFormatError(f"{oracle_path}: more rows than the {n_rows:,} of {path.name}")
    if filled != n_kept:
        raise RawFormatError(f"{path}: changed while it was read ({n_kept:,} rows of the kept users, then {filled:,})")
    return {"rows": kept, "items": items, "n_rows": n_rows, "positives": positives, "oracle": kept_oracle}


# ----------------------------------------------------------------------------------------
# Feature files (JSON lines)
# ----------------------------------------------------------------------------------------


def _json_lines(path: Path, field: str):
    """(line number, item id, value of ``field``) of every line, checked for shape."""
    if not path.exists():
        raise MissingInputError(f"{path}: file not found (expected the TikTok feature file {path.name})")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                record = json.loads(raw)
            except UnicodeDecodeError:  # json.loads decodes bytes itself; say where, not just what
                decode_line(path, number, raw)
                raise
            except json.JSONDecodeError as error:
                raise RawFormatError(f"{path}, line {number}: malformed JSON ({error.msg}, column {error.colno})") from None
            if not isinstance(record, dict):
                raise RawFormatError(f"{path}, line {number}: expected a JSON object")
            item = record.get("item_id")
            if not isinstance(item, int) or isinstance(item, bool):
                raise _fail(path, number, "item_id", "expected an integer item id", item)
            if field not in record:
                raise _fail(path, number, field, "missing")
            yield number, item, record[field]


class _Ids:
    """Item ids seen in one modality's files, with where they were seen, to report duplicates."""

    def __init__(self):
        self.ids, self.files, self.lines = array("q"), array("i"), array("q")

    def add(self, file_index: int, line: int, item: int) -> None:
        self.ids.append(item)
        self.files.append(file_index)
        self.lines.append(line)

    def check(self, paths: list[Path]) -> None:
        ids = np.frombuffer(self.ids, dtype=np.int64) if len(self.ids) else np.zeros(0, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
        if not len(repeated):
            return
        later = order[repeated + 1]
        second = int(later.min())
        first = int(order[np.searchsorted(ids[order], ids[second])])
        raise _fail(paths[self.files[second]], self.lines[second], "item_id",
                    f"duplicate item id, first seen in {paths[self.files[first]].name} line {self.lines[first]}",
                    int(ids[second]))


def _rows_of(items: list[int], kept_items: np.ndarray) -> np.ndarray:
    """Row of each id in the sorted ``kept_items``, -1 when absent."""
    ids = np.asarray(items, dtype=np.int64)
    pos = np.searchsorted(kept_items, ids).clip(max=max(len(kept_items) - 1, 0))
    found = (kept_items[pos] == ids) if len(kept_items) else np.zeros(len(ids), dtype=bool)
    return np.where(found, pos, -1)


def read_vectors(paths: list[Path], field: str, kept_items: np.ndarray) -> tuple[np.ndarray, dict]:
    """The kept items' vectors (zeros where an item has no line) and counts about the files."""
    matrix = np.zeros((len(kept_items), FEATURE_DIM), dtype=np.float32)
    covered = np.zeros(len(kept_items), dtype=bool)
    seen = _Ids()
    short = 0
    batch_items, batch_vectors = [], []

    def flush():
        rows = _rows_of(batch_items, kept_items)
        hit = rows >= 0
        for row, vector in zip(rows[hit].tolist(), [v for v, h in zip(batch_vectors, hit) if h]):
            matrix[row, : len(vector)] = vector
        covered[rows[hit]] = True
        batch_items.clear()
        batch_vectors.clear()

    for file_index, path in enumerate(paths):
        for number, item, values in _json_lines(path, field):
            if not isinstance(values, list):
                raise _fail(path, number, field, "expected a list of numbers", values)
            if len(values) > FEATURE_DIM:
                raise _fail(path, number, field, f"expected at most {FEATURE_DIM} values, found {len(values)}")
            try:
                vector = np.array(values, dtype=np.float64)
            except (TypeError, ValueError):
                raise _fail(path, number, field, "expected a list of numbers") from None
            if vector.ndim != 1:
                raise _fail(path, number, field, "expected a flat list of numbers")
            finite = np.isfinite(vector)
            if not finite.all():
                j = int(np.flatnonzero(~finite)[0])
                raise _fail(path, number, field, f"value {j} is not a finite number", values[j])
            short += len(vector) < FEATURE_DIM
            seen.add(file_index, number, item)
            batch_items.append(item)
            batch_vectors.append(vector)
            if len(batch_items) >= _BATCH_LINES:
                flush()
    flush()
    seen.check(paths)
    return matrix, {"lines": len(seen.ids), "items_without": int((~covered).sum()), "short_vectors_padded": int(short)}


def read_titles(path: Path, kept_items: np.ndarray):
    """The kept items' title word counts as a sparse (items x distinct words) matrix, and counts."""
    from scipy import sparse

    rows, words, counts = array("q"), array("q"), array("d")
    covered = np.zeros(len(kept_items), dtype=bool)
    seen = _Ids()
    empty = 0
    for number, item, title in _json_lines(path, TITLE_KEY):
        if not isinstance(title, dict):
            raise _fail(path, number, TITLE_KEY, "expected an object of word id: count", title)
        parsed = []
        for word, count in title.items():
            if not _INTEGER.fullmatch(word.strip()):
                raise _fail(path, number, TITLE_KEY, "expected integer word ids", word)
            if isinstance(count, bool) or not isinstance(count, (int, float)) or not np.isfinite(count) or count < 0:
                raise _fail(path, number, TITLE_KEY, f"word {word}: expected a non-negative count", count)
            parsed.append((int(word), float(count)))
        seen.add(0, number, item)
        empty += not parsed
        row = int(_rows_of([item], kept_items)[0])
        if row >= 0:
            covered[row] = True
            for word, count in parsed:
                rows.append(row)
                words.append(word)
                counts.append(count)
    seen.check([path])
    words = np.frombuffer(words, dtype=np.int64) if len(words) else np.zeros(0, dtype=np.int64)
    vocabulary, columns = np.unique(words, return_inverse=True)
    matrix = sparse.csr_matrix(
        (np.frombuffer(counts, dtype=np.float64) if len(counts) else np.zeros(0),
         (np.frombuffer(rows, dtype=np.int64) if len(rows) else np.zeros(0, dtype=np.int64), columns)),
        shape=(len(kept_items), len(vocabulary)))
    return matrix, {"lines": len(seen.ids), "items_without": int((~covered).sum()), "empty_titles": int(empty),
                    "distinct_words": int(len(vocabulary))}


# ----------------------------------------------------------------------------------------
# Reduction
# ----------------------------------------------------------------------------------------


def reduce_matrix(matrix, target, seed: int = 0) -> tuple[np.ndarray, str]:
    """Centred PCA of a dense or sparse matrix to ``target`` (int width or float variance share).

    Up to ``COVARIANCE_MAX_WORDS`` columns: exact PCA from the columns' covariance
    (``covariance_eigh``: a d x d matrix, so memory stays near the input's even for millions of
    rows). Wider (sparse word counts over a large vocabulary): ARPACK, which centres implicitly,
    with more components until the variance share is reached. A fixed width at or above the
    number of columns keeps the matrix as it is.
    """
    from scipy import sparse
    from sklearn.decomposition import PCA

    n_rows, n_cols = matrix.shape
    whole = f"the {'sparse' if sparse.issparse(matrix) else 'dense'} {n_rows:,} x {n_cols:,} matrix"
    if isinstance(target, float) and target >= 1.0:
        target = min(n_rows, n_cols)
    if n_rows < 2 or n_cols == 0 or (not isinstance(target, float) and int(target) >= n_cols):
        dense = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
        return (dense if n_cols else np.zeros((n_rows, 1))).astype(np.float32), f"no PCA: {whole}"
    if not isinstance(target, float):
        target = int(min(target, n_rows))
    if n_cols <= COVARIANCE_MAX_WORDS:
        reduced = PCA(n_components=target, svd_solver="covariance_eigh").fit_transform(matrix)
        return reduced.astype(np.float32), f"PCA (exact, covariance_eigh) of {whole}"
    limit = min(n_rows, n_cols) - 1
    k = min(target, limit) if isinstance(target, int) else min(64, limit)
    while True:
        model = PCA(n_components=k, svd_solver="arpack", random_state=seed).fit(matrix)
        keep = k
        if isinstance(target, float):
            share = np.cumsum(model.explained_variance_ratio_)
            if share[-1] < target and k < limit:
                k = min(2 * k, limit)
                continue
            keep = int(min(np.searchsorted(share, target) + 1, k))
        return model.transform(matrix)[:, :keep].astype(np.float32), f"PCA (ARPACK, implicit centring) of {whole}"


def reduce_modalities(raw: dict, settings: dict) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """PCA (variance share or fixed ``<name>_dim`` width) then per-column min-max, per modality."""
    reduced, methods = {}, {}
    for name, matrix in raw.items():
        matrix, methods[name] = reduce_matrix(matrix, settings.get(f"{name}_dim") or settings["pca_variance"],
                                              settings["converter_seed"])
        reduced[name] = minmax_scale(matrix)
    return reduced, methods


# ----------------------------------------------------------------------------------------
# The conversion
# ----------------------------------------------------------------------------------------


def user_filter(raw_dir: Path, asked) -> tuple[int, str]:
    """(the user filter to apply, where it comes from). ``None`` means "the right one for these
    files": the paper's 4,000 on real files; on a generated sample, the threshold its heavy users
    were planted at (``heavy_min_rows`` in SYNTHETIC.json: 50 at tiny/sample scale, 4,000 at
    full), so a filter keeps exactly the planted heavy users, as the paper's kept its 1,678."""
    if asked is not None:
        return int(asked), "as set"
    info = read_json_or_none(Path(raw_dir) / "SYNTHETIC.json")
    planted = (info or {}).get("params", {}).get("heavy_min_rows")
    if planted is not None:
        return int(planted), "the generated sample's heavy-user threshold"
    return PAPER_MIN_USER_INTERACTIONS, "the paper's, for real files"


def _checked_settings(settings: dict | None) -> dict:
    settings = complete_settings("tiktok", SETTINGS, settings)
    require(settings, "label_action", settings["label_action"] in LABELS, f"one of {', '.join(LABELS)}")
    for name in ("visual_dim", "acoustic_dim", "textual_dim"):
        require(settings, name, settings[name] is None or is_integer(settings[name], 1),
                "a positive integer or ~ (PCA keeping pca_variance)")
    require(settings, "min_user_interactions",
            settings["min_user_interactions"] is None or is_integer(settings["min_user_interactions"]),
            "an integer >= 0 or ~ (by source)")
    require(settings, "chunk_rows", is_integer(settings["chunk_rows"], 1), "an integer >= 1")
    require(settings, "action_labels", isinstance(settings["action_labels"], bool), "true or false")
    require(settings, "pca_variance", is_share(settings["pca_variance"]), "a share in (0, 1]")
    require(settings, "converter_seed", is_integer(settings["converter_seed"]), "an integer >= 0")
    require(settings, "item_float_seq", isinstance(settings["item_float_seq"], bool), "true or false")
    return settings


def convert(raw_dir: Path, out_dir: Path, settings: dict | None = None, force: bool = False) -> dict:
    """Convert TikTok track 1 raw files; skip when the manifest shows the same inputs and settings."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    settings = _checked_settings(settings)
    inputs = required_files(raw_dir)
    for path in inputs:
        if not path.exists():
            raise MissingInputError(f"{path}: file not found (expected the TikTok raw file {path.name})")
    oracle_path = raw_dir / ORACLE_FILE
    oracle_path = oracle_path if oracle_path.exists() else None
    effective = {k: v for k, v in settings.items() if k not in _NO_EFFECT_SETTINGS}
    print_fp = fingerprint(inputs + ([oracle_path] if oracle_path else []), effective)
    with folder_lock(out_dir):  # a second process converting the same folder waits, then skips
        done = skip_conversion(out_dir, raw_dir, print_fp, force)
        if done is not None:
            return done
        return _write_dataset(raw_dir, out_dir, settings, inputs, oracle_path, print_fp)


def _write_dataset(raw_dir: Path, out_dir: Path, settings: dict, inputs: list, oracle_path: Path | None,
                   print_fp: str) -> dict:
    """The conversion itself, once ``convert`` has checked the settings and holds the folder."""
    label = settings["label_action"]
    started = time.time()
    synthetic = (raw_dir / "SYNTHETIC.json").exists()
    minimum, minimum_source = user_filter(raw_dir, settings["min_user_interactions"])
    settings = {**settings, "min_user_interactions": minimum}
    log(f"min_user_interactions {minimum:,} ({minimum_source})")
    if not synthetic and minimum < PAPER_MIN_USER_INTERACTIONS:
        log(f"note: min_user_interactions {minimum} on real files (the paper kept users with >= "
            f"{PAPER_MIN_USER_INTERACTIONS:,}); a low filter keeps far more rows")
    train = inputs[0]
    log(f"pass 1 over {train}: counting rows per user (chunks of {int(settings['chunk_rows']):,} rows)")
    user_rows, n_rows = count_user_rows(train, settings["chunk_rows"])
    if not n_rows:
        raise RawFormatError(f"{train}: no rows (the file is empty); expected one interaction per line, "
                             f"{len(TRAIN_COLUMNS)} tab-separated integers: {' '.join(TRAIN_COLUMNS)}")
    kept_users = user_rows.index.to_numpy()[user_rows.to_numpy() >= minimum]
    log(f"{n_rows:,} rows, {len(user_rows):,} users; {len(kept_users):,} users with >= {minimum:,} rows")
    if not len(kept_users):
        raise InputError(f"{train}: no rows left after the user filter: no user has >= {minimum:,} rows "
                         f"(min_user_interactions {minimum:,}, {minimum_source}; {n_rows:,} rows of "
                         f"{len(user_rows):,} users, the most active with {int(user_rows.max()):,}); "
                         f"lower min_user_interactions")
    log(f"pass 2 over {train}: checking every row, keeping those users' rows")
    n_kept = int(user_rows.to_numpy()[user_rows.to_numpy() >= minimum].sum())
    passed = keep_rows(train, kept_users, n_kept, settings, oracle_path)
    if passed["n_rows"] != n_rows:
        raise RawFormatError(f"{train}: changed while it was read ({n_rows:,} rows, then {passed['n_rows']:,})")
    rows = passed.pop("rows")  # in file order; the .inter is written chronologically, file order among ties
    kept_rates = {name: float(rows[name].mean()) for name in LABELS}
    order = np.argsort(rows["time"], kind="stable")
    inter = pd.DataFrame({"user_id": rows.pop("user_id")[order], "item_id": rows.pop("item_id")[order],
                          "timestamp": np.arange(len(order), dtype=np.int64)})
    inter["label"] = rows[label][order].astype(np.float32)
    inter["device"] = rows.pop("device")[order]
    if settings["action_labels"]:
        for name in LABELS:
            inter[action_label_field(name)] = rows[name][order].astype(np.float32)
    oracle = passed.pop("oracle")
    oracle = oracle[order] if oracle is not None else None
    del rows, order
    dropped = {"user_below_min_interactions": n_rows - len(inter)}
    log(f"{len(inter):,} rows kept ({dropped})")

    item_table = passed["items"].sort_values("item_id", kind="stable").reset_index(drop=True)
    kept_items = item_table["item_id"].to_numpy()
    log(f"reading the feature files for {len(kept_items):,} items")
    visual, visual_stats = read_vectors(inputs[1:12], VIDEO_KEY, kept_items)
    acoustic, acoustic_stats = read_vectors(inputs[12:16], AUDIO_KEY, kept_items)
    textual, textual_stats = read_titles(inputs[16], kept_items)
    log(f"building modalities (paper recipe: visual {settings['visual_dim'] or settings['pca_variance']}, acoustic "
        f"{settings['acoustic_dim'] or settings['pca_variance']}, textual {settings['textual_dim'] or settings['pca_variance']})")
    reduced, methods = reduce_modalities({"visual": visual, "acoustic": acoustic, "textual": textual}, settings)
    del visual, acoustic, textual

    item = pd.DataFrame({"item_id": kept_items, "author_id": item_table["author_id"].to_numpy(),
                         "duration": item_table["duration_time"].to_numpy()})
    dims = {name: int(matrix.shape[1]) for name, matrix in reduced.items()}
    manifest = {
        "dataset": "tiktok",
        "source": str(raw_dir.resolve()),
        "synthetic": synthetic,
        "fingerprint": print_fp,
        "settings": settings,
        "user_filter": minimum_source,
        "item_recipe": "paper: visual = video vector, acoustic = audio vector, textual = title word counts; "
                       "each -> PCA (variance share or fixed width) -> min-max",
        "modality_methods": methods,
        "timestamp": "position in chronological order (time, then file line)",
        "rows": {"raw_interactions": n_rows, "inter": len(inter), "items": len(item), "users": len(kept_users),
                 "raw_users": len(user_rows)},
        "dropped": dropped,
        "label": label,
        "label_rate": kept_rates[label],
        "action_labels": [action_label_field(name) for name in LABELS] if settings["action_labels"] else [],
        "action_rates": {name: passed["positives"][name] / n_rows for name in LABELS},
        "kept_action_rates": kept_rates,
        "items_without": {"visual": visual_stats["items_without"], "acoustic": acoustic_stats["items_without"],
                          "textual": textual_stats["items_without"]},
        "feature_files": {"visual": visual_stats, "acoustic": acoustic_stats, "textual": textual_stats},
        "modality_dims": dims,
        "seconds": None,
    }
    with AtomicWriter(out_dir) as writer:
        writer.write_table("tiktok.inter", inter, {"user_id": "token", "item_id": "token", "timestamp": "float",
                                                   "label": "float", "device": "float",
                                                   **{column: "float" for column in inter.columns
                                                      if column.startswith(ACTION_LABEL_PREFIX)}})
        writer.write_table("tiktok.item", *item_float_seq({column: item[column].to_numpy() for column in item.columns},
                                                          {"item_id": "token", "author_id": "token", "duration": "float"},
                                                          reduced, settings["item_float_seq"]))
        writer.write_arrays("tiktok.mm.npz", {"item_id": kept_items.astype(str), **reduced})
        if oracle is not None:
            writer.write_array("tiktok.oracle.npy", oracle.astype(np.float32))
        manifest["seconds"] = round(time.time() - started, 2)
        writer.write_manifest(manifest)  # an older tiktok.oracle.npy it does not list is removed
    log(f"wrote {out_dir} in {manifest['seconds']} s: {len(inter):,} interactions, {len(item):,} items, dims {dims}")
    return manifest
