"""Check a bring-your-own dataset (docs/byo_dataset.md) before RecBole or the model reads it.

RecBole reads atomic files with pandas and takes what it gets: a short line becomes missing
values, a label of 2 or NaN trains and scores as if it were a label, a wrong encoding surfaces
as a bare ``UnicodeDecodeError``; a modality archive whose ids match no item trains a model on
zero vectors. These checks refuse such input with one line naming file, line (where there is
one) and field, as ``InputError``:

- ``check_atomic_file``: UTF-8 text (no byte-order mark: RecBole would read it into the first
  field's name), a typed header (``name:token`` ...), every line with the header's number of
  fields, at least one row, and for ``.inter`` a label of 0 or 1 on every row;
- ``check_modality_archive``: a NumPy archive without pickled objects whose ``item_id`` is a
  1-d array of distinct strings, and whose matrices are 2-d, numeric, finite, one row per id.

The coverage of the interacted items (``min_item_feature_coverage``) needs RecBole's item ids
and is checked where they are known, in ``MMa4CTRDataset._load_modalities`` (``coverage_problem``).
Good files pay one UTF-8 pass and one pyarrow read of one column (pyarrow still counts every
line's fields); the line-by-line search only runs when either fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, MissingInputError
from . import rawtext

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
# The settings the check of a bring-your-own folder reads (``sources.check_atomic_files``): how a
# line splits and which column holds the label. The folder's files themselves are read as they are.
SETTINGS = ("field_separator", "LABEL_FIELD")
BINARY = r"^\s*(0|1)(\.0*)?\s*$"  # 0, 1, 0.0, 1.0 (pandas writes floats so)


def check_atomic_file(path, label_field: str | None = None, separator: str = "\t") -> int:
    """Check one RecBole atomic file (see the module docstring); returns its number of rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as arrow_csv

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: file not found")
    header = _typed_header(path, separator)
    names = [name for name, _ in header]
    kept = label_field if label_field in names else names[0]  # pyarrow counts every line's fields anyway
    if not _is_utf8(path):
        raise _line_problem(path, names, separator) or InputError(f"{path}: not valid UTF-8 text")
    try:
        table = rawtext.arrow_read(path, dict(column_names=names, skip_rows=1),
                                   arrow_csv.ParseOptions(delimiter=separator, quote_char=False),
                                   arrow_csv.ConvertOptions(include_columns=[kept], column_types={kept: pa.string()},
                                                            strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise _line_problem(path, names, separator) or InputError(f"{path}: cannot be read ({error})") from None
    if not table.num_rows:
        raise InputError(f"{path}: no rows below the header")
    if label_field in names:
        cells = table.column(label_field).combine_chunks()
        good = pc.match_substring_regex(cells, BINARY).to_numpy(zero_copy_only=False)
        if not good.all():
            row = int(np.argmin(good))
            raise InputError(f"{path}, line {rawtext.line_of(path, row)}, field '{label_field}': expected a label of "
                             f"0 or 1 (value {cells[row].as_py()[:40]!r})")
    return table.num_rows


def _is_utf8(path: Path, chunk: int = 1 << 24) -> bool:
    """Whether the whole file decodes as UTF-8, read in 16 MB pieces (C speed, bounded memory)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _typed_header(path: Path, separator: str) -> list[tuple[str, str]]:
    with open(path, "rb") as handle:
        raw = handle.readline()
    if raw.startswith(b"\xef\xbb\xbf"):
        raise InputError(f"{path}, line 1: the file starts with a UTF-8 byte-order mark, which RecBole reads as part "
                         f"of the first field's name; save it as UTF-8 without one")
    text = rawtext.decode_line(path, 1, raw).rstrip("\r\n")
    if not text.strip():
        raise InputError(f"{path}, line 1: empty; expected a header of typed fields such as user_id:token")
    header = []
    for cell in text.split(separator):
        name, _, kind = cell.strip().partition(":")
        if kind not in FIELD_TYPES:
            raise InputError(f"{path}, line 1, field {cell.strip()!r}: expected 'name:type' with type one of "
                             f"{', '.join(FIELD_TYPES)} (fields are {separator!r}-separated)")
        header.append((name, kind))
    return header


def _line_problem(path: Path, names: list[str], separator: str) -> InputError | None:
    """The first line that is not UTF-8 or has another number of fields than the header."""
    mark = separator.encode()
    with open(path, "rb") as handle:
        handle.readline()
        for number, raw in enumerate(handle, 2):
            text = rawtext.decode_line(path, number, raw, names, mark).rstrip("\r\n")
            if not text:
                continue  # RecBole (pandas) skips blank lines
            found = text.count(separator) + 1
            if found != len(names):
                return InputError(f"{path}, line {number}: expected {len(names)} {separator!r}-separated fields "
                                  f"({', '.join(names)}), found {found}")
    return None


def check_modality_archive(path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(item ids as str, {modality: float32 matrix})`` of a checked ``<name>.mm.npz``."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a NumPy .npz archive ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: a single NumPy array, not an .npz archive (save it with np.savez)")
    with archive:
        if "item_id" not in archive.files:
            raise InputError(f"{path}: no 'item_id' array (the archive has {sorted(archive.files)})")
        arrays = {}
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except ValueError:  # object arrays need pickle, which is never loaded
                raise InputError(f"{path}, field '{name}': holds Python objects (pickled); save plain arrays "
                                 f"(item_id with dtype=str, matrices as float32)") from None
    ids = _checked_ids(path, arrays.pop("item_id"))
    return ids, {name: _checked_matrix(path, name, matrix, ids) for name, matrix in arrays.items()}


def _checked_ids(path: Path, ids: np.ndarray) -> np.ndarray:
    if ids.ndim != 1:
        raise InputError(f"{path}, field 'item_id': an array of shape {ids.shape}; expected one id per item (1-d)")
    if ids.dtype.kind not in "US":
        raise InputError(f"{path}, field 'item_id': {ids.dtype} ids; save the ids as strings equal to the .inter's "
                         f"item_id tokens: np.array(ids, dtype=str)")
    if not len(ids):
        raise InputError(f"{path}, field 'item_id': no rows")
    ids = ids.astype(str)
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):
        second = int(order[repeated + 1].min())
        first = int(np.flatnonzero(ids == ids[second])[0])
        raise InputError(f"{path}, field 'item_id', row {second}: duplicate id {str(ids[second])!r} (also row {first})")
    return ids


def _checked_matrix(path: Path, name: str, matrix: np.ndarray, ids: np.ndarray) -> np.ndarray:
    where = f"{path}, field '{name}'"
    if matrix.ndim != 2:
        raise InputError(f"{where}: an array of shape {matrix.shape}; expected a 2-d matrix, one row per item_id")
    if matrix.dtype.kind not in "fiub":
        raise InputError(f"{where}: {matrix.dtype} values; expected numbers (float32)")
    if matrix.shape[0] != len(ids):
        raise InputError(f"{where}: {matrix.shape[0]:,} rows, but item_id has {len(ids):,}; one row per id")
    if not matrix.shape[1]:
        raise InputError(f"{where}: no columns")
    finite = np.isfinite(matrix)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise InputError(f"{where}, row {row} (item_id {str(ids[row])!r}), column {column}: NaN or infinite value "
                         f"({matrix[row, column]})")
    return matrix.astype(np.float32, copy=False)


def coverage_problem(path, covered: int, interacted: int, minimum: float) -> InputError | None:
    """The error when fewer than ``minimum`` of the interacted items have vectors, else None."""
    share = covered / interacted if interacted else 0.0
    if share >= minimum:
        return None
    return InputError(f"{path}, field 'item_id': only {covered:,} of the {interacted:,} items in the interactions "
                      f"({share:.0%}) have vectors; min_item_feature_coverage is {minimum} (are the ids the "
                      f".inter's item_id tokens?)")
