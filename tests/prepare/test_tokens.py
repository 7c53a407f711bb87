"""Token-list parsing and padding (the paper's text input), on cells with known answers."""

import numpy as np
import pyarrow as pa
import pytest

from recbole_mma4ctr.prepare import tokens
from recbole_mma4ctr.prepare.tokens import TokenLists
from recbole_mma4ctr.errors import RawFormatError

pytestmark = pytest.mark.unit  # pure: no RecBole training, no Ray (python -m pytest -m unit)


def as_lists(token_lists):
    return [row.tolist() for row in token_lists.to_list()]


def test_id_lists_split_on_any_whitespace_and_empty_cells_give_empty_rows():
    cells = np.array([" 1 2  3 ", "", "4\t5", None, "7"], dtype=object)
    assert as_lists(tokens.parse_id_list(cells, "f.csv", "ocr")) == [[1, 2, 3], [], [4, 5], [], [7]]
    # pyarrow input (what the converter passes) gives the same
    assert as_lists(tokens.parse_id_list(pa.array([" 1 2  3 ", "", "4\t5", None, "7"]), "f.csv", "ocr")) == \
        [[1, 2, 3], [], [4, 5], [], [7]]


def test_keyword_lists_use_semicolons_and_tags_keep_the_id_only():
    keywords = tokens.parse_id_list(np.array(["1;2; 3;", "", ";;"], dtype=object), "f.csv", "kw", ";")
    assert as_lists(keywords) == [[1, 2, 3], [], []]
    tags = tokens.parse_tag_list(np.array(["5 0.3;6 1e-2;7", "", "8 .5 ;"], dtype=object), "f.csv", "tags")
    assert as_lists(tags) == [[5, 6, 7], [], [8]]


@pytest.mark.parametrize("cells, parse, message", [
    (["1 2", "3 x"], lambda c: tokens.parse_id_list(c, "f.csv", "ocr"),
     r"f.csv, line 3, field 'ocr': expected integer ids \(value '3 x'\)"),
    (["1 2", "", "4 5.0"], lambda c: tokens.parse_id_list(c, "f.csv", "asr"), r"f.csv, line 4, field 'asr'"),
    (["5 0.3;6 abc"], lambda c: tokens.parse_tag_list(c, "f.csv", "tags"),
     r"f.csv, line 2, field 'tags': expected 'tag probability' pairs"),
    (["5 0.3", "x 0.1"], lambda c: tokens.parse_tag_list(c, "f.csv", "tags"), r"f.csv, line 3, field 'tags'"),
])
def test_a_bad_cell_is_named_by_line_and_field(cells, parse, message):
    with pytest.raises(RawFormatError, match=message):
        parse(np.array(cells, dtype=object))


def test_fallback_join_and_padding_match_the_row_wise_definitions():
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 100, size=rng.integers(0, 9)) for _ in range(50)]
    other = [rng.integers(1, 100, size=rng.integers(0, 4)) for _ in range(50)]
    a, b = TokenLists.from_arrays(rows), TokenLists.from_arrays(other)
    assert as_lists(tokens.first_non_empty(a, b)) == [(p if len(p) else f).tolist() for p, f in zip(rows, other)]
    assert as_lists(tokens.join_lists(a, b, a)) == [np.concatenate([p, f, p]).tolist() for p, f in zip(rows, other)]
    padded = tokens.pad_sequences(a, 5)
    for row, sequence in zip(padded, rows):  # zeros at the end (the authors'); a long row keeps its first 5 ids
        head = sequence[:5]
        assert row.tolist() == head.tolist() + [0] * (5 - len(head))


def test_padding_width_truncation_and_all_empty_rows():
    lists = TokenLists.from_arrays([np.arange(1, 8), np.array([5]), np.array([], int)])
    np.testing.assert_array_equal(tokens.pad_sequences(lists), [[1, 2, 3, 4, 5, 6, 7], [5] + [0] * 6, [0] * 7])
    buffer = np.full(100, 7.0)  # a reused buffer is zeroed first
    np.testing.assert_array_equal(tokens.pad_sequences(lists, 3, buffer=buffer), [[1, 2, 3], [5, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(tokens.pad_sequences([np.array([], int)] * 2, 4), [[0], [0]])


@pytest.mark.parametrize("high", [1_000, 10**12])  # counted, and sorted (ids too large to count)
def test_dense_codes_match_numpys_unique(high):
    values = np.random.default_rng(high % 97).integers(0, high, 5_000)
    vocabulary, columns = tokens.dense_codes(values)
    expected_vocabulary, expected_columns = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(vocabulary, expected_vocabulary)
    np.testing.assert_array_equal(columns, expected_columns.ravel())


def test_bgm_ids_negative_ids_are_ids_and_only_empty_cells_are_missing():
    from recbole_mma4ctr.prepare import wechat

    rows = {column: ["", "", "", ""] for column in wechat.FEED_COLUMNS}
    rows["bgm_singer_id"] = ["-5", "", "7", "-5"]
    rows["bgm_song_id"] = ["1", "2", "", "1"]
    _, music = wechat._token_lists(pa.table(rows), wechat.default_settings())
    # the authors' treatment: a missing id is category 0 with its own vector; two ids + missing =
    # 3 categories: int(3 ** 0.25) = 1 column each
    singer, song = music[:, :1], music[:, 1:]
    assert music.shape == (4, 2)
    np.testing.assert_array_equal(singer[0], singer[3])  # the same id, the same vector
    assert len(np.unique(singer)) == 3 and len(np.unique(song)) == 3  # -5, 7 and missing differ
    np.testing.assert_array_equal(song[0], song[3])
