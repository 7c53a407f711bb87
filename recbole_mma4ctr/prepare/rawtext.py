"""Read raw CSV files fast, and explain a bad one by file, line and field.

The converters read with pyarrow (multi-threaded, columnar: the full WeChat action file in about
a second) and only when that fast read fails do they go back over the file to find out why:
text that is not UTF-8, a line with the wrong number of fields, a cell of the wrong type. The
slow diagnosis never runs on good input, so good input pays nothing for good errors.

Encodings: the raw files are UTF-8 (ids and ASCII digits, in practice). A UTF-8 byte-order mark
is accepted. Anything else (a file saved as GBK, Latin-1 or UTF-16) is refused with the first
offending line and field, rather than guessed at: a wrong guess would silently turn ids into
other ids.

Long lines: Python's ``csv`` module refuses fields over 128 KB by default and pyarrow rows
longer than its read block; neither is a property of the data, so the diagnosis lifts the
first limit (``no_field_limit``) and the fast reader retries with a block that holds the
longest line (``longest_line``).
"""

from __future__ import annotations

import csv
import io
from contextlib import contextmanager
from pathlib import Path

from ..errors import FastReadFailed, MissingInputError, RawFormatError

UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
FIELD_LIMIT = 2**31 - 1  # csv's own limit is 131,072 characters; a C long bounds what it accepts
BLOCK_SIZE = 1 << 20     # pyarrow's default read block


@contextmanager
def no_field_limit():
    """csv readers inside accept fields of any length (the limit is process-wide: restored after)."""
    previous = csv.field_size_limit(FIELD_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def longest_line(path: Path, chunk: int = 1 << 24) -> int:
    """The length in bytes of the file's longest line, read in 16 MB pieces."""
    import numpy as np

    longest = start = offset = 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                return max(longest, offset - start)
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + offset
            if len(ends):
                longest = max(longest, int(ends[0]) - start, int(np.diff(ends).max(initial=0)))
                start = int(ends[-1]) + 1
            offset += len(block)


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
        raise MissingInputError(f"{path}: file not found")
    with open(path, "rb") as handle:
        raw = handle.readline()
    text = decode_line(path, 1, raw).rstrip("\r\n")
    with no_field_limit():
        return [name.strip() for name in next(csv.reader([text], delimiter=separator, skipinitialspace=True), [])]


def check_header(path: Path, needed, what: str = "raw file") -> list[str]:
    """Line 1's column names, or a clear error naming the missing ones."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: file not found (expected the {what} {path.name})")
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


def arrow_read(path: Path, read_options: dict, parse_options, convert_options):
    """pyarrow's ``read_csv``; a line longer than the read block (pyarrow: "straddling object")
    is read again with a block that holds the longest line, so a valid long line reads."""
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    def read(block_size: int):
        return arrow_csv.read_csv(path, read_options=arrow_csv.ReadOptions(**read_options, block_size=block_size),
                                  parse_options=parse_options, convert_options=convert_options)

    try:
        return read(BLOCK_SIZE)
    except pa.ArrowInvalid as error:
        if "straddl" not in str(error):
            raise
    return read(max(BLOCK_SIZE, 2 * longest_line(path) + 1024))


def read_table(path: Path, header: list[str], columns, types: dict):
    """The named columns of a comma-separated file whose line 1 is ``header`` (as
    ``read_header`` parsed it: the names used are those, spaces stripped), typed as ``types``
    says (pyarrow types; strings stay strings, empty cells empty, never null). Raises
    ``FastReadFailed`` on anything unexpected, including a null in a typed column. A file that
    only reads with quoted newlines allowed (slower to parse) is read that way, and one with a
    line longer than the read block with a block that holds it."""
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    def read(newlines_in_values: bool):
        return arrow_read(path, dict(column_names=header, skip_rows=1),
                          arrow_csv.ParseOptions(newlines_in_values=newlines_in_values),
                          arrow_csv.ConvertOptions(include_columns=list(columns), column_types=types,
                                                   strings_can_be_null=False))

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
    """The error for the first record whose number of fields differs from the header's, or
    whose quoted field never closes, or None. A record may span lines (a quoted newline): it is
    named by the line it starts on."""
    with no_field_limit(), open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, strict=True)
        next(reader, None)
        start = reader.line_num + 1
        try:
            for fields in reader:
                if fields and len(fields) != len(header):
                    spans = f" (a quoted field runs on to line {reader.line_num})" if reader.line_num > start else ""
                    return RawFormatError(f"{path}, line {start}: expected {len(header)} comma-separated "
                                          f"fields, found {len(fields)}{spans}")
                start = reader.line_num + 1
        except csv.Error as error:
            return quote_problem(path, header, start, error)
    return None


def quote_problem(path: Path, header: list[str], number: int, error: csv.Error) -> RawFormatError:
    """The error for a record (starting on line ``number``) that ``csv`` could not parse: a
    quote that never closes (it then runs to the end of the file) or text after a closing quote."""
    with open(path, "rb") as handle:
        for _ in range(number - 1):
            handle.readline()
        text = decode_line(path, number, handle.readline(), header).rstrip("\r\n")
    with no_field_limit():
        index = len(next(csv.reader(io.StringIO(text + "\n")), [""])) - 1  # the open field absorbs the rest
    field = f", field '{header[index]}'" if 0 <= index < len(header) else ""
    if "unexpected end of data" in str(error):
        return RawFormatError(f"{path}, line {number}{field}: unbalanced quote (a quoted field opens here and never "
                              f"closes)")
    return RawFormatError(f"{path}, line {number}{field}: badly quoted field ({error})")
