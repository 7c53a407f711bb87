"""Read raw CSV files fast, and explain a bad one by file, line and field.

The converters read with pyarrow (multi-threaded, columnar: the full WeChat action file in about
a second) and only when that fast read fails do they go back over the file to find out why:
text that is not UTF-8, a line with the wrong number of fields, a cell of the wrong type. The
slow diagnosis never runs on good input, so good input pays nothing for good errors.

Encodings: the raw files are UTF-8 (ids and ASCII digits, in practice). A UTF-8 byte-order mark
is accepted. Anything else (a file saved as GBK, Latin-1 or UTF-16) is refused with the first
offending line and field, rather than guessed at: a wrong guess would silently turn ids into
other ids.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .tokens import RawFormatError

UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")


class FastReadFailed(Exception):
    """pyarrow could not read the file as asked; the caller diagnoses (``diagnose_csv``)."""


def not_utf8(path: Path, number: int, raw: bytes, error: UnicodeDecodeError, header: list[str] | None = None,
             separator: bytes = b",") -> RawFormatError:
    """The error for line ``number`` (1-based) whose bytes ``raw`` failed to decode."""
    if number == 1 and raw.startswith(UTF16_MARKS):
        return RawFormatError(f"{path}, line 1: the file is UTF-16 text; save it as UTF-8")
    where = f"{path}, line {number}"
    if header:
        field_index = raw[:error.start].count(separator)
        if field_index < len(header):
            where += f", field '{header[field_index]}'"
    byte = raw[error.start:error.start + 1]
    return RawFormatError(f"{where}: not valid UTF-8 text (byte 0x{byte.hex()} at character {error.start + 1}); "
                          f"save the file as UTF-8")


def decode_line(path: Path, number: int, raw: bytes, header: list[str] | None = None,
                separator: bytes = b",") -> str:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise not_utf8(path, number, raw, error, header, separator) from None


def read_header(path: Path, separator: str = ",") -> list[str]:
    """The column names on line 1, parsed as CSV (quoted names allowed), stripped of spaces; a
    UTF-8 byte-order mark is skipped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, "rb") as handle:
        raw = handle.readline()
    text = decode_line(path, 1, raw).rstrip("\r\n")
    return [name.strip() for name in next(csv.reader([text], delimiter=separator, skipinitialspace=True), [])]


def check_header(path: Path, needed, what: str = "raw file") -> list[str]:
    """Line 1's column names, or a clear error naming the missing ones."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found (expected the {what} {path.name})")
    header = read_header(path)
    missing = [column for column in needed if column not in header]
    if missing:
        raise RawFormatError(f"{path}, line 1: missing column(s) {', '.join(missing)}")
    return header


def line_of(path: Path, row: int) -> int:
    """The line number (1-based, as an editor shows it) of data row ``row`` (0-based, after the
    header). CSV readers skip blank lines, so ``row + 2`` is only right without them; this counts
    them, reading the file once, which only error messages pay for."""
    path = Path(path)
    if not path.is_file():
        return row + 2
    seen = -1
    with open(path, "rb") as handle:
        handle.readline()
        for number, raw in enumerate(handle, 2):
            if raw.strip(b"\r\n"):
                seen += 1
                if seen == row:
                    return number
    return row + 2


def first_non_utf8(path: Path, header: list[str] | None = None, separator: bytes = b",") -> RawFormatError | None:
    """The error for the first line that is not UTF-8 text, or None when the whole file is."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                return not_utf8(path, number, raw, error, header, separator)
    return None


def read_table(path: Path, header: list[str], columns, types: dict):
    """The named columns of a comma-separated file whose line 1 is ``header`` (as
    ``read_header`` parsed it: the names used are those, spaces stripped), typed as ``types``
    says (pyarrow types; strings stay strings, empty cells empty, never null). Raises
    ``FastReadFailed`` on anything unexpected, including a null in a typed column. A file that
    only reads with quoted newlines allowed (slower to parse) is read that way."""
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    def read(newlines_in_values: bool):
        return arrow_csv.read_csv(
            path,
            read_options=arrow_csv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=arrow_csv.ParseOptions(newlines_in_values=newlines_in_values),
            convert_options=arrow_csv.ConvertOptions(include_columns=list(columns), column_types=types,
                                                     strings_can_be_null=False),
        )

    failures = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowKeyError)
    try:
        table = read(False)
    except failures as error:
        try:
            table = read(True)
        except failures:
            raise FastReadFailed(str(error)) from None
    if any(table.column(name).null_count for name in columns):
        raise FastReadFailed("empty cells in a typed column")
    return table


def diagnose_csv(path: Path, header: list[str], error: Exception | str) -> RawFormatError:
    """Why a comma-separated file could not be read: bad encoding, else the first line whose
    number of fields differs from the header's, else the reader's own message. Cell-type
    problems are the caller's to name (it knows the expected types)."""
    return (first_non_utf8(path, header) or field_count_problem(path, header)
            or RawFormatError(f"{path}: cannot be read ({error})"))


def field_count_problem(path: Path, header: list[str]) -> RawFormatError | None:
    """The error for the first line whose number of fields differs from the header's, or None."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for fields in reader:
            if fields and len(fields) != len(header):
                return RawFormatError(f"{path}, line {reader.line_num}: expected {len(header)} comma-separated "
                                      f"fields, found {len(fields)}")
    return None
