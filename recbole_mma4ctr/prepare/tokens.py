"""Parse the token-list fields of raw files into padded id matrices (the paper's text input).

WeChat's description / ocr / asr fields are space-separated integer ids, its keyword lists are
``;``-separated ids and its machine tags are ``;``-separated ``tag prob`` pairs. The authors pad
each item's id sequence with zeros AT THE END (Keras ``pad_sequences(padding='post')``) to the
longest sequence and feed the padded ids straight into PCA. Ours caps the width at ``maxlen``
(the converter's ``token_maxlen``): a longer sequence keeps its FIRST ``maxlen`` ids, so the
columns kept are exactly the first ``maxlen`` columns of the authors' uncapped matrix.
"""

from __future__ import annotations

import numpy as np

from ..errors import RawFormatError
from .rawtext import line_of


def _fail(file_name: str, row: int, field: str, value: str, why: str) -> RawFormatError:
    """Data row ``row`` of ``file_name`` named by its line (the header is line 1; blank lines
    counted when the file is there to read: ``rawtext.line_of``)."""
    shown = value if len(value) <= 60 else value[:57] + "..."
    return RawFormatError(f"{file_name}, line {line_of(file_name, row)}, field '{field}': {why} (value {shown!r})")


EMPTY = np.zeros(0, dtype=np.int64)


class TokenLists:
    """One integer sequence per row, stored flat: ``values`` (every row's ids, row after row) and
    ``offsets`` (row ``r`` is ``values[offsets[r]:offsets[r + 1]]``).

    100 k feeds x 6 token fields as Python lists of arrays cost seconds of interpreter time per
    step; flat arrays let parsing, fallbacks, joins and padding run as a few numpy operations.
    """

    __slots__ = ("values", "offsets")

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values = np.asarray(values, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)

    @classmethod
    def from_arrays(cls, sequences) -> "TokenLists":
        if isinstance(sequences, TokenLists):
            return sequences
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        values = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if lengths.sum() else EMPTY
        return cls(values, _offsets(lengths))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def rows(self) -> np.ndarray:
        """The row of each value."""
        return np.repeat(np.arange(len(self)), self.lengths)

    def __getitem__(self, row: int) -> np.ndarray:
        return self.values[self.offsets[row]:self.offsets[row + 1]]

    def to_list(self) -> list[np.ndarray]:
        return [self[row] for row in range(len(self))]


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def _as_strings(values):
    """A pyarrow string array (nulls read as empty) from pyarrow, pandas or numpy input."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array([v if isinstance(v, str) else "" for v in np.asarray(values, dtype=object)], type=pa.string())
    return pc.fill_null(values.cast(pa.string()), "")


def _split(cells, separator: str):
    """(non-empty pieces, row of each piece) of a string array split on ``separator`` (" " means
    any run of whitespace; other separators' pieces are stripped)."""
    import pyarrow.compute as pc

    whitespace = separator == " "
    pieces = pc.ascii_split_whitespace(cells) if whitespace else pc.split_pattern(cells, pattern=separator)
    rows = pc.list_parent_indices(pieces).to_numpy()
    flat = pc.list_flatten(pieces)
    if not whitespace:
        flat = pc.utf8_trim_whitespace(flat)
    empty = pc.equal(pc.binary_length(flat), 0)
    if pc.any(empty).as_py():  # leading/trailing separators; filtering costs, so only when needed
        keep = pc.invert(empty)
        flat, rows = flat.filter(keep), rows[keep.to_numpy(zero_copy_only=False)]
    return flat, rows


INTEGER = r"^-?[0-9]{1,18}$"


def _first_bad(pieces, rows, pattern: str) -> int | None:
    """The row of the first piece not matching ``pattern``, or None."""
    import pyarrow.compute as pc

    good = pc.match_substring_regex(pieces, pattern).to_numpy(zero_copy_only=False)
    return int(rows[np.argmin(good)]) if len(good) and not good.all() else None


def _to_int64(pieces, rows, cells, file_name: str, field: str, why: str) -> np.ndarray:
    """Cast text pieces to int64; when the (fast) cast fails, name the first bad cell."""
    import pyarrow as pa

    try:
        return pieces.cast(pa.int64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = _first_bad(pieces, rows, INTEGER)
        row = bad if bad is not None else 0
        raise _fail(file_name, row, field, cells[row].as_py().strip(), why) from None


def parse_id_list(values, file_name: str, field: str, separator: str = " ") -> TokenLists:
    """Each cell to its integer ids (``separator``-separated; empty pieces ignored, an empty cell
    gives an empty row). The first cell holding a non-integer piece is named by line and field."""
    cells = _as_strings(values)
    pieces, rows = _split(cells, separator)
    ids = _to_int64(pieces, rows, cells, file_name, field, "expected integer ids")
    return TokenLists(ids, _offsets(np.bincount(rows, minlength=len(cells))))


FLOAT = r"^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)?$"


def parse_tag_list(values, file_name: str, field: str) -> TokenLists:
    """``tag prob;tag prob`` cells to their tag ids (probabilities checked, then dropped)."""
    import pyarrow.compute as pc

    cells = _as_strings(values)
    pairs, rows = _split(cells, ";")
    parts = pc.utf8_split_whitespace(pairs)
    tags = pc.list_element(parts, 0)
    seconds = pc.list_slice(parts, 1, 2)  # the probability, where the pair has one
    pair_of_second = pc.list_parent_indices(seconds).to_numpy()
    bad = [_first_bad(tags, rows, INTEGER), _first_bad(pc.list_flatten(seconds), rows[pair_of_second], FLOAT)]
    bad = min((row for row in bad if row is not None), default=None)
    if bad is not None:
        raise _fail(file_name, bad, field, cells[bad].as_py().strip(), "expected 'tag probability' pairs")
    ids = _to_int64(tags, rows, cells, file_name, field, "expected 'tag probability' pairs")
    return TokenLists(ids, _offsets(np.bincount(rows, minlength=len(cells))))


def _gather(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> TokenLists:
    """Rows made of ``values[starts[r]:starts[r] + lengths[r]]``."""
    offsets = _offsets(lengths)
    index = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - starts, lengths)
    return TokenLists(values[index], offsets)


def first_non_empty(primary: TokenLists, fallback: TokenLists) -> TokenLists:
    """Row-wise: the primary list unless it is empty, else the fallback (e.g. ocr, then ocr_char)."""
    use_primary = primary.lengths > 0
    values = np.concatenate([primary.values, fallback.values])
    starts = np.where(use_primary, primary.offsets[:-1], len(primary.values) + fallback.offsets[:-1])
    lengths = np.where(use_primary, primary.lengths, fallback.lengths)
    return _gather(values, starts, lengths)


def join_lists(*columns: TokenLists) -> TokenLists:
    """Row-wise concatenation: row r = columns[0][r] + columns[1][r] + ..."""
    lengths = np.sum([column.lengths for column in columns], axis=0)
    offsets = _offsets(lengths)
    out = np.empty(offsets[-1], dtype=np.int64)
    written = offsets[:-1].copy()
    for column in columns:
        rows = column.rows
        within = np.arange(len(column.values)) - column.offsets[:-1][rows]
        out[written[rows] + within] = column.values
        written += column.lengths
    return TokenLists(out, offsets)


def padded_width(sequences, maxlen: int | None = None) -> int:
    """The width ``pad_sequences`` gives (at least 1)."""
    lengths = TokenLists.from_arrays(sequences).lengths
    longest = int(lengths.max()) if len(lengths) else 0
    return max(longest if maxlen is None else min(longest, int(maxlen)), 1)


def pad_sequences(sequences, maxlen: int | None = None, buffer: np.ndarray | None = None) -> np.ndarray:
    """Zero-pad at the end to a common length (the authors' ``padding='post'``); longer sequences
    keep their first ``maxlen`` ids (module docstring).

    ``buffer`` (flat float64, large enough) is reused for the result instead of fresh memory: the
    converter pads three 100 k x 512 matrices in turn, and re-zeroing one buffer is cheaper than
    faulting in new pages each time.
    """
    sequences = TokenLists.from_arrays(sequences)
    lengths = sequences.lengths
    width = padded_width(sequences, maxlen)
    if len(lengths) and lengths.max() > width:  # keep each row's first ``width`` ids
        sequences = _gather(sequences.values, sequences.offsets[:-1], np.minimum(lengths, width))
        lengths = sequences.lengths
    n_rows = len(sequences)
    if buffer is None:
        padded = np.zeros(n_rows * width, dtype=np.float64)
    else:
        padded = buffer[:n_rows * width]
        padded.fill(0.0)
    # value i of row r lands at r * width + (i - offsets_r): ids first, zeros after them
    shift = np.arange(n_rows, dtype=np.int64) * width - sequences.offsets[:-1]
    padded[np.arange(len(sequences.values), dtype=np.int64) + np.repeat(shift, lengths)] = sequences.values
    return padded.reshape(n_rows, width)


def dense_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, each value's index among them), as ``np.unique(return_inverse)``
    gives, but by counting when the values are small non-negative integers (ids and tokens are:
    ~20 M tokens sort in seconds, count in a fraction of one)."""
    if len(values) and values.min() >= 0 and values.max() < 4 * len(values) + 1_000_000:
        present = np.bincount(values) > 0
        return np.flatnonzero(present), (np.cumsum(present) - 1)[values]
    distinct, codes = np.unique(values, return_inverse=True)
    return distinct, codes.ravel()


def random_id_embedding(ids: np.ndarray, missing: np.ndarray, seed: int, max_dim: int = 64) -> np.ndarray:
    """Fixed random embeddings of categorical ids (the authors' bgm singer/song treatment).

    As their code does it: a missing id is read as id 0, a category of its own with its own
    vector ("no background music is a type too"); dimension = int(number of distinct ids,
    that category included, ** 0.25), rounded down, between 1 and ``max_dim``; one standard
    normal vector per category (torch's ``nn.Embedding`` initialisation). The same id always
    gets the same vector for a given seed.
    """
    values = np.where(missing, 0, ids)
    distinct, codes = np.unique(values, return_inverse=True)
    dim = int(min(max_dim, max(1, int(len(distinct) ** 0.25))))
    table = np.random.default_rng(seed).standard_normal((len(distinct), dim))
    return table[codes.ravel()]
