"""Parse the token-list fields of raw files into padded id matrices (the paper's text input).

WeChat's description / ocr / asr fields are space-separated integer ids, its keyword lists are
``;``-separated ids and its machine tags are ``;``-separated ``tag prob`` pairs. The paper pads
each item's id sequence with zeros (Keras ``pad_sequences``: zeros in front, and a too-long
sequence keeps its last ``maxlen`` ids) and feeds the padded ids straight into PCA.
"""

from __future__ import annotations

import numpy as np


class RawFormatError(ValueError):
    """A raw input value that cannot be parsed; the message names file, line and field."""


def _fail(file_name: str, row: int, field: str, value: str, why: str) -> RawFormatError:
    # Line numbers count the header as line 1, as an editor shows them.
    shown = value if len(value) <= 60 else value[:57] + "..."
    return RawFormatError(f"{file_name}, line {row + 2}, field '{field}': {why} (value {shown!r})")


EMPTY = np.zeros(0, dtype=np.int64)


def _cells(values):
    """(row, stripped text) of each cell; missing or non-text cells read as empty."""
    for row, cell in enumerate(values):
        yield row, (cell.strip() if isinstance(cell, str) else "")


def parse_id_list(values, file_name: str, field: str, separator: str = " ") -> list[np.ndarray]:
    """Each cell to an int64 array; an empty cell gives an empty array."""
    parsed = []
    for row, text in _cells(values):
        try:
            parsed.append(np.array([int(tok) for tok in text.split(separator) if tok.strip()], dtype=np.int64)
                          if text else EMPTY)
        except ValueError:
            raise _fail(file_name, row, field, text, "expected integer ids") from None
    return parsed


def parse_tag_list(values, file_name: str, field: str) -> list[np.ndarray]:
    """``tag prob;tag prob`` cells to arrays of tag ids (probabilities checked, then dropped)."""
    parsed = []
    for row, text in _cells(values):
        if not text:
            parsed.append(EMPTY)
            continue
        tags = []
        for pair in filter(None, (part.strip() for part in text.split(";"))):
            pieces = pair.split()
            try:
                tags.append(int(pieces[0]))
                if len(pieces) > 1:
                    float(pieces[1])
            except (ValueError, IndexError):
                raise _fail(file_name, row, field, text, "expected 'tag probability' pairs") from None
        parsed.append(np.array(tags, dtype=np.int64))
    return parsed


def first_non_empty(primary: list[np.ndarray], fallback: list[np.ndarray]) -> list[np.ndarray]:
    """Row-wise: the primary list unless it is empty, else the fallback (e.g. ocr, then ocr_char)."""
    return [p if len(p) else f for p, f in zip(primary, fallback)]


def join_lists(*columns: list[np.ndarray]) -> list[np.ndarray]:
    return [np.concatenate(parts) for parts in zip(*columns)]


def pad_sequences(sequences: list[np.ndarray], maxlen: int | None = None) -> np.ndarray:
    """Zero-pad in front to a common length; longer sequences keep their last ``maxlen`` ids."""
    longest = max((len(s) for s in sequences), default=0)
    width = longest if maxlen is None else min(longest, int(maxlen))
    width = max(width, 1)
    padded = np.zeros((len(sequences), width), dtype=np.float64)
    for row, sequence in enumerate(sequences):
        if len(sequence) == 0:
            continue
        tail = sequence[-width:]
        padded[row, width - len(tail):] = tail
    return padded


def random_id_embedding(ids: np.ndarray, missing: np.ndarray, seed: int, max_dim: int = 64) -> np.ndarray:
    """Fixed random embeddings of categorical ids (the paper's bgm singer/song treatment).

    Dimension = (number of distinct ids) ** 0.25, rounded, between 1 and ``max_dim``; missing
    ids get a zero vector. The same id always gets the same vector for a given seed.
    """
    present = ids[~missing]
    distinct = np.unique(present)
    dim = int(min(max_dim, max(1, round(len(distinct) ** 0.25)))) if len(distinct) else 1
    table = np.random.default_rng(seed).standard_normal((len(distinct), dim))
    out = np.zeros((len(ids), dim))
    if len(distinct):
        out[~missing] = table[np.searchsorted(distinct, present)]
    return out
