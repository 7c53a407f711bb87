"""Check a bring-your-own dataset (docs/byo_dataset.md) before RecBole or the model reads it.

RecBole reads atomic files with pandas and takes what it gets: a short line becomes missing
values, a label of 2 or NaN trains and scores as if it were a label, a wrong encoding surfaces
as a bare ``UnicodeDecodeError``; a modality archive whose ids match no item trains a model on
zero vectors. These checks refuse such input with one line naming file, line (where there is
one) and field, as ``InputError``:

- ``check_atomic_file``: UTF-8 text (no byte-order mark: RecBole would read it into the first
  field's name), a typed header (``name:token`` ...) naming each field once, every line with the
  header's number of fields, no field opening with a double quote (pandas, RecBole's reader,
  would take it for a quoted field and read on past the line's end), at least one row; for
  ``.inter`` also a ``label`` and a ``timestamp`` field, both typed ``float`` (a ``label:token``
  is read as ids), a label of 0 or 1 on every row with both values present (a label column
  without positive rows gives nothing to learn or score), and a finite number as every row's
  timestamp;
- ``check_modality_archive``: a readable NumPy archive without pickled objects whose
  ``item_id`` is a 1-d array of distinct strings, and whose matrices are 2-d, numeric, finite,
  one row per id, every value in [0, 1]. Out-of-range values are refused, not rescaled: the
  documented input is min-max scaled, and rescaling a column that holds an outlier (3e38, or
  unscaled values of 1e6) would squash its other values to one constant, the meaningless
  constant scores the check exists to prevent; only the user knows what the values mean.

The coverage of the interacted items (``min_item_feature_coverage``) needs RecBole's item ids
and is checked where they are known, in ``MMa4CTRDataset._load_modalities`` (``coverage_problem``).
Time order for large timestamps (RecBole keeps them as float32) is kept where RecBole reads the
file (``compat.exact_time_order``). Good files pay one UTF-8 pass and one pyarrow read of two
columns (pyarrow still counts every line's fields); the line-by-line search only runs when either
fails.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingInputError
from . import rawtext

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
BINARY = r"^\s*(0|1)(\.0*)?\s*$"  # 0, 1, 0.0, 1.0 (pandas writes floats so)
NUMBER = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"  # finite decimals; no nan, inf or ''
QUOTE = b'"'


def check_atomic_file(path, label_field: str | None = None, separator: str = "\t", time_field: str | None = None) -> int:
    """Check one RecBole atomic file (see the module docstring); returns its number of rows.
    ``label_field`` and ``time_field`` are given for the ``.inter`` (the config's ``LABEL_FIELD``
    and ``TIME_FIELD``): both must be there, typed float."""
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: file not found")
    header = _typed_header(path, separator)
    names = [name for name, _ in header]
    required = [field for field in (label_field, time_field) if field]
    for field in required:
        _check_required_field(path, header, field, "label" if field == label_field else "timestamp")
    kept = required or names[:1]  # pyarrow counts every line's fields anyway
    utf8, quoted = _scan(path)
    if not utf8:
        raise _line_problem(path, names, separator) or InputError(f"{path}: not valid UTF-8 text")
    if quoted:
        problem = _quote_problem(path, names, separator)
        if problem is not None:
            raise problem
    try:
        table = rawtext.arrow_read(path, dict(column_names=names, skip_rows=1),
                                   arrow_csv.ParseOptions(delimiter=separator, quote_char=False),
                                   arrow_csv.ConvertOptions(include_columns=kept,
                                                            column_types={name: pa.string() for name in kept},
                                                            strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise _line_problem(path, names, separator) or InputError(f"{path}: cannot be read ({error})") from None
    if not table.num_rows:
        raise InputError(f"{path}: no rows below the header")
    if time_field:
        _check_cells(path, table, time_field, NUMBER, "expected a number as the timestamp")
    if label_field:
        labels = _check_cells(path, table, label_field, BINARY, "expected a label of 0 or 1")
        _check_both_labels(path, label_field, labels)
    return table.num_rows


def _check_required_field(path: Path, header: list[tuple[str, str]], field: str, role: str) -> None:
    """The ``.inter``'s label or timestamp field: present and typed float."""
    kinds = dict(header)
    if field not in kinds:
        example = "label:float, 0 or 1 on every row" if role == "label" else \
            "timestamp:float, e.g. the row's position 0, 1, 2 ... or unix seconds"
        raise InputError(f"{path}, line 1: no field {field!r} (the {role}; fields are "
                         f"{', '.join(name for name, _ in header)}); add {example}")
    if kinds[field] != "float":
        raise InputError(f"{path}, line 1, field '{field}:{kinds[field]}': the {role} must be typed float "
                         f"({field}:float); RecBole reads a {kinds[field]} field as ids, not numbers")


def _check_cells(path: Path, table, field: str, pattern: str, expected: str):
    """Every cell of ``field`` matches ``pattern``, else the first that does not is named; returns
    the column (a pyarrow string array)."""
    import pyarrow.compute as pc

    cells = table.column(field).combine_chunks()
    good = pc.match_substring_regex(cells, pattern).to_numpy(zero_copy_only=False)
    if not good.all():
        row = int(np.argmin(good))
        raise InputError(f"{path}, line {rawtext.line_of(path, row)}, field '{field}': {expected} "
                         f"(value {cells[row].as_py()[:40]!r})")
    return cells


def _check_both_labels(path: Path, field: str, labels) -> None:
    """A label column of one class trains nothing and scores nothing (AUC needs both); ``labels``
    are checked cells (``BINARY``)."""
    import pyarrow.compute as pc

    positive = pc.match_substring_regex(labels, r"^\s*1").to_numpy(zero_copy_only=False)
    if positive.all() or not positive.any():
        missing, only = ("positive", 0) if not positive.any() else ("negative", 1)
        raise InputError(f"{path}, field '{field}': no {missing} rows (all {len(labels):,} labels are {only}); "
                         f"a CTR model needs rows of both labels to train and be scored")


def _scan(path: Path, chunk: int = 1 << 24) -> tuple[bool, bool]:
    """(whether the whole file decodes as UTF-8, whether it holds a double quote), read in 16 MB
    pieces (C speed, bounded memory)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    quoted = False
    try:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                decoder.decode(block)
                quoted = quoted or QUOTE in block
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False, quoted
    return True, quoted


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
        seen = [index for index, (other, _) in enumerate(header, 1) if other == name]
        if seen:
            raise InputError(f"{path}, line 1, field '{name}': named twice in the header (fields {seen[0]} and "
                             f"{len(header) + 1}); each field once")
        header.append((name, kind))
    return header


def _lines(path: Path, names: list[str], separator: str):
    """(line number, text) of each non-blank line below the header, decoded (a line that is not
    UTF-8 is named)."""
    mark = separator.encode()
    with open(path, "rb") as handle:
        handle.readline()
        for number, raw in enumerate(handle, 2):
            text = rawtext.decode_line(path, number, raw, names, mark).rstrip("\r\n")
            if text:  # RecBole (pandas) skips blank lines
                yield number, text


def _line_problem(path: Path, names: list[str], separator: str) -> InputError | None:
    """The first line that is not UTF-8 or has another number of fields than the header."""
    for number, text in _lines(path, names, separator):
        found = text.count(separator) + 1
        if found != len(names):
            return InputError(f"{path}, line {number}: expected {len(names)} {separator!r}-separated fields "
                              f"({', '.join(names)}), found {found}")
    return None


def _quote_problem(path: Path, names: list[str], separator: str) -> InputError | None:
    """The first field that opens with a double quote: RecBole's pandas reader takes it for a
    quoted field, which runs on (over separators and line ends) to the next quote."""
    for number, text in _lines(path, names, separator):
        for index, cell in enumerate(text.split(separator)):
            if cell.startswith('"'):
                field = f", field '{names[index]}'" if index < len(names) else ""
                return InputError(f"{path}, line {number}{field}: starts with a double quote ({cell[:20]!r}), which "
                                  f"RecBole's reader takes as the start of a quoted field (read on to the next quote, "
                                  f"over tabs and line ends); atomic files are not quoted: remove the quote")
    return None


def check_modality_archive(path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(item ids as str, {modality: float32 matrix})`` of a checked ``<name>.mm.npz``."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable NumPy .npz archive ({_reason(error)}); write it again with "
                         f"np.savez (docs/byo_dataset.md)") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: a single NumPy array, not an .npz archive (save it with np.savez)")
    with archive:
        if "item_id" not in archive.files:
            raise InputError(f"{path}: no 'item_id' array (the archive has {sorted(archive.files)})")
        arrays = {name: _read_array(path, archive, name) for name in archive.files}
    ids = _checked_ids(path, arrays.pop("item_id"))
    return ids, {name: _checked_matrix(path, name, matrix, ids) for name, matrix in arrays.items()}


def _reason(error: Exception) -> str:
    return str(error) or type(error).__name__


def _read_array(path: Path, archive, name: str) -> np.ndarray:
    """One array of an open archive; pickled objects are never loaded, a damaged member is named."""
    try:
        return archive[name]
    except ValueError as error:
        if "allow_pickle" in str(error):  # object arrays need pickle, which is never loaded
            raise InputError(f"{path}, field '{name}': holds Python objects (pickled); save plain arrays "
                             f"(item_id with dtype=str, matrices as float32)") from None
        raise InputError(f"{path}, field '{name}': cannot be read ({_reason(error)}); the archive is damaged, "
                         f"write it again with np.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise InputError(f"{path}, field '{name}': cannot be read ({_reason(error)}); the archive is damaged "
                         f"(cut short?), write it again with np.savez") from None


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
    outside = (matrix < 0) | (matrix > 1)
    if outside.any():
        row, column = (int(i) for i in np.argwhere(outside)[0])
        raise InputError(f"{where}, row {row} (item_id {str(ids[row])!r}), column {column}: value "
                         f"{matrix[row, column]:.6g} outside [0, 1] ({int(outside.sum()):,} of {matrix.size:,} values; "
                         f"range {matrix.min():.6g} to {matrix.max():.6g}); min-max scale each column to [0, 1] "
                         f"before saving, the model does not rescale (docs/byo_dataset.md)")
    return matrix.astype(np.float32, copy=False)


def coverage_problem(path, covered: int, interacted: int, minimum: float) -> InputError | None:
    """The error when fewer than ``minimum`` of the interacted items have vectors, else None."""
    share = covered / interacted if interacted else 0.0
    if share >= minimum:
        return None
    return InputError(f"{path}, field 'item_id': only {covered:,} of the {interacted:,} items in the interactions "
                      f"({share:.0%}) have vectors; min_item_feature_coverage is {minimum} (are the ids the "
                      f".inter's item_id tokens?)")
