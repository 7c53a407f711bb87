"""WeChat Big Data Challenge 2021 raw files -> RecBole atomic files plus modality matrices.

Inputs (``RAW_DIR``; formats in docs/data.md): ``user_action.csv``, ``feed_info.csv`` and, unused by
the paper's recipe and read only with ``feed_embedding: true``, ``feed_embeddings.csv``. Outputs (``OUT_DIR``):

- ``wechat.inter``: ``user_id:token item_id:token timestamp:float label:float device:float``.
  WeChat only records the day (``date_``). Rows are written in chronological order (by day,
  file order within a day) and ``timestamp`` is the row's position in that order (0, 1, 2 ...),
  so the split is deterministic and the timestamp doubles as the row's id. RecBole stores float
  fields as float32, exact for integers only up to 2**24 (16.7 M): positions stay exact on the
  full data (7.3 M rows), a ``date_ * 10**7 + line`` code would not.
- ``wechat.item``: ``item_id:token author_id:token duration:float``.
- ``wechat.mm.npz``: ``item_id`` (raw feed ids) and one float32 matrix per modality, ``visual``,
  ``acoustic``, ``textual``, rows aligned with ``item_id``. A binary sidecar rather than
  ``float_seq`` text columns: 100 k items x 500 floats as text is ~0.5 GB that RecBole would
  parse with pandas' python engine; the sidecar is exact and loads in milliseconds.
- ``wechat.oracle.npy``: only for generated samples (``oracle_prob.csv`` present): each kept
  row's true probability of the chosen label, in ``.inter`` order, for "oracle" ceilings.
- ``manifest.json``: fingerprint, settings, row counts, dropped rows and why, dimensions, and
  ``rows_by_day`` (rows of each ``date_``, in .inter order: the day split's source).

The item recipe is the authors' released one (docs/protocols.md; ``text_recipe: paper``, the
default), each token list zero-padded AT THE END to the longest one (capped at ``token_maxlen``):

- visual = PCA(``pca_variance``) of the padded ``ocr`` ids (an empty cell filled from ``ocr_char``);
- acoustic = PCA of the padded ``asr_char`` ids (gaps from ``asr``), THEN the fixed random
  embeddings of ``bgm_singer_id`` and ``bgm_song_id`` appended unreduced (a missing id is a
  category of its own; dimension int(distinct ** 0.25)). Appending them before the PCA, as this
  project once did, loses the music: the padded-id columns' variance (~1e7) swamps the
  embeddings' (~1) and the PCA keeps none of their directions;
- textual = PCA of the padded ``description`` ids (gaps from ``description_char``), plus the raw
  padded ``machine_keyword_list`` ids, plus the raw padded ``machine_tag_list`` tag ids (gaps
  from ``manual_tag_list``), the last two unreduced (43 + 16 + 14 = 73 on the real data).

Each modality is then min-max scaled per column; the manifest's ``modality_parts`` gives each
part's width. A fixed ``<modality>_dim`` is the modality's final width: the PCA part gets what the
unreduced parts leave (a width they alone fill is refused). ``text_recipe: tfidf`` treats each modality's token
parts as one bag instead: TF-IDF, then truncated SVD to the fewest components holding
``pca_variance`` of the energy (capped at ``text_max_dim``) or to a fixed width, then min-max
(prepare/text.py); the bgm embeddings still join acoustic unreduced.

Rows (``settings``; the paper protocol sets the authors' choices, properties/protocol/paper.yaml):
``dedupe: user_feed_label`` keeps one row per distinct (user, feed, label) triple, as the authors'
set does (``none``: every row); ``row_order: authors`` writes the rows in the authors' order
(``prepare/authors_order.py``: grouped by user, in the order of their Python set) instead of
``chronological``; ``device_choice: last_pair`` gives each user the device of the (user, device)
pair their set lists last, on every row, instead of each row's own (``row``). The user filter
counts the rows left after the dedupe, as theirs does.
``feed_embedding: true`` adds a fourth matrix, ``embedding``: the 512-d feed embeddings, PCA
keeping ``pca_variance`` (or ``embedding_dim``), min-max; feeds without one get zeros (counted in the
manifest). Fusion names only use visual/acoustic/textual, so the model ignores it today. Labels: ``weighted`` (the paper's
weighted sum of seven actions / 13 >= 0.5) or any single action (``label_action``); with
``action_labels: true`` the ``.inter`` also holds every action as a 0/1 column ``label_<action>``
(``label_read_comment:float`` ... ``label_follow:float``), which the multi-task models read
(``multitask.py``); ``label`` stays the chosen one, and RecBole reads only the columns its
``load_col`` names, so a plain RecBole run is unchanged. Every setting's
default is in properties/dataset/wechat.yaml (``SETTINGS`` names its keys).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import FastReadFailed, InputError, MissingInputError, RawFormatError
from ..fusion import minmax_scale, pca_reduce
from . import rawtext, text, tokens
from .atomic import (action_label_field, AtomicWriter, complete_settings, fingerprint, folder_lock, is_integer,
                     is_share, item_float_seq, log, require, skip_conversion)
from .authors_order import authors_order, last_pair_device, set_order_positions

ACTION_FILE = "user_action.csv"
FEED_FILE = "feed_info.csv"
EMBEDDING_FILE = "feed_embeddings.csv"
ORACLE_FILE = "oracle_prob.csv"
ACTIONS = ("read_comment", "like", "click_avatar", "forward", "favorite", "comment", "follow")
ACTION_WEIGHTS = {"read_comment": 4, "like": 3, "click_avatar": 2, "forward": 1, "favorite": 1, "comment": 1, "follow": 1}
ACTION_COLUMNS = ("userid", "feedid", "date_", "device") + ACTIONS
FEED_COLUMNS = (
    "feedid", "authorid", "videoplayseconds", "description", "ocr", "asr", "bgm_song_id",
    "bgm_singer_id", "machine_keyword_list", "machine_tag_list", "ocr_char", "asr_char",
    "description_char", "manual_tag_list",
)
# The converter's settings: the keys of properties/dataset/wechat.yaml that hold their defaults.
SETTINGS = ("label_action", "min_user_actions", "pca_variance", "token_maxlen", "text_recipe", "text_max_dim",
            "visual_dim", "acoustic_dim", "textual_dim", "embedding_dim", "feed_embedding", "converter_seed",
            "dedupe", "row_order", "device_choice", "item_float_seq", "action_labels")


def default_settings() -> dict:
    """The converter's defaults, as properties/dataset/wechat.yaml holds them."""
    return complete_settings("wechat", SETTINGS, {})
ROW_CHOICES = {"dedupe": ("none", "user_feed_label"), "row_order": ("chronological", "authors"),
               "device_choice": ("row", "last_pair")}


def read_oracle(path: Path, n_rows: int, label_name: str) -> np.ndarray | None:
    """Generated samples carry each row's true label probability (``oracle_prob.csv``); real data not."""
    import pyarrow as pa

    if not path.exists():
        return None
    column = f"p_{label_name}"
    header = rawtext.check_header(path, (column,), "oracle file")
    try:
        values = rawtext.read_table(path, header, (column,), {column: pa.float64()}).column(column).to_numpy()
    except FastReadFailed as error:
        problem = rawtext.first_non_utf8(path, header) or rawtext.field_count_problem(path, header)
        if problem is not None:
            raise problem from None
        # then a cell: empty, text or NaN (pyarrow reads "nan" as a missing value)
        text = pd.read_csv(path, usecols=[column], dtype=str, keep_default_na=False)[column]
        finite = np.isfinite(pd.to_numeric(text, errors="coerce").to_numpy())
        if finite.all():
            raise rawtext.diagnose_csv(path, header, error) from None
        row = int(np.argmin(finite))
        raise RawFormatError(f"{path}, line {rawtext.line_of(path, row)}, field '{column}': expected a "
                                    f"probability (value {text.iat[row]!r})") from None
    if len(values) != n_rows:
        raise RawFormatError(f"{path}: {len(values)} rows, but {ACTION_FILE} has {n_rows}")
    return values


def required_files(raw_dir: Path) -> list[Path]:
    return [Path(raw_dir) / ACTION_FILE, Path(raw_dir) / FEED_FILE]


def has_raw_files(raw_dir: Path) -> bool:
    return all(path.exists() for path in required_files(raw_dir))


def weighted_label(actions: dict) -> np.ndarray:
    """The paper's label: weighted sum of the seven actions / 13 >= 0.5."""
    total = sum(ACTION_WEIGHTS[name] * np.asarray(actions[name], dtype=np.int16) for name in ACTIONS)  # <= 13
    return (total / sum(ACTION_WEIGHTS.values()) >= 0.5).astype(np.float32)


def read_actions(path: Path) -> dict[str, np.ndarray]:
    """``user_action.csv``'s columns as int64 arrays; the actions checked to be 0 or 1."""
    import pyarrow as pa

    header = rawtext.check_header(path, ACTION_COLUMNS, "WeChat raw file")
    try:
        # actions as int8 (a value beyond int8 fails over to the checked reader, which names it)
        types = {column: pa.int8() if column in ACTIONS else pa.int64() for column in ACTION_COLUMNS}
        table = rawtext.read_table(path, header, ACTION_COLUMNS, types)
        out = {column: table.column(column).to_numpy() for column in ACTION_COLUMNS}
    except FastReadFailed as error:
        out = _read_actions_checked(path, header, error)
    if not len(out["userid"]):
        raise RawFormatError(f"{path}: no rows below the header")
    for name in ACTIONS:
        bad = (out[name] != 0) & (out[name] != 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise RawFormatError(f"{path}, line {rawtext.line_of(path, row)}, field '{name}': "
                                        f"expected 0 or 1 (value {out[name][row]})")
    return out


def _read_actions_checked(path: Path, header: list[str], error) -> dict[str, np.ndarray]:
    """The slow reader, run only when the fast one failed: names the encoding problem, the line
    with the wrong number of fields, or the first cell that is not an integer, by line and field."""
    problem = rawtext.first_non_utf8(path, header) or rawtext.field_count_problem(path, header)
    if problem is not None:  # a line with too many or too few fields is named, never realigned
        raise problem
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, header=0, names=header)
    except pd.errors.ParserError:
        raise rawtext.diagnose_csv(path, header, error) from None
    out = {}
    for column in ACTION_COLUMNS:
        text = frame[column].fillna("").str.strip()
        good = text.str.fullmatch(tokens.INTEGER).to_numpy(dtype=bool)
        if not good.all():
            row = int(np.argmin(good))
            raise RawFormatError(
                f"{path}, line {rawtext.line_of(path, row)}, field '{column}': expected an integer "
                f"(value {text.iat[row]!r})"
            )
        out[column] = text.astype(np.int64).to_numpy()
        if column in ACTIONS and ((out[column] == 0) | (out[column] == 1)).all():
            out[column] = out[column].astype(np.int8)
    return out


def read_feeds(path: Path):
    """``feed_info.csv`` as a pyarrow table of strings (empty cells stay empty) plus the feed ids
    as int64; a non-integer or repeated feed id is named by line."""
    import pyarrow as pa

    header = rawtext.check_header(path, FEED_COLUMNS, "WeChat raw file")
    try:
        feeds = rawtext.read_table(path, header, FEED_COLUMNS, {column: pa.string() for column in FEED_COLUMNS})
    except FastReadFailed as error:
        raise rawtext.diagnose_csv(path, header, error) from None
    if not feeds.num_rows:
        raise RawFormatError(f"{path}: no rows below the header")
    feed_ids = integer_column(feeds.column("feedid"), path, "feedid", "expected an integer feed id", allow_empty=False)
    check_unique(feed_ids, path, "feedid")
    return feeds, feed_ids


def trimmed(column):
    """A string column (chunked or not) as one array, cells stripped of surrounding spaces."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.utf8_trim_whitespace(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)


def float_column(column, path: Path, field: str) -> np.ndarray:
    """A string column of finite numbers to float64; the first other cell (empty, text, NaN,
    inf) is named by line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = trimmed(column)
    good = pc.match_substring_regex(column, tokens.FLOAT).to_numpy(zero_copy_only=False)
    if not good.all():
        row = int(np.argmin(good))
        raise RawFormatError(f"{path}, line {rawtext.line_of(path, row)}, field '{field}': expected a finite number "
                                    f"(value {column[row].as_py()!r})")
    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if not np.isfinite(values).all():  # e.g. 1e400, which reads as inf
        row = int(np.argmin(np.isfinite(values)))
        raise RawFormatError(f"{path}, line {rawtext.line_of(path, row)}, field '{field}': expected a finite "
                                    f"number (value {column[row].as_py()!r})")
    return values


def check_unique(ids: np.ndarray, path: Path, field: str) -> None:
    """Refuse a repeated id, naming the line of its second occurrence."""
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):
        row = int(order[repeated + 1].min())
        raise RawFormatError(f"{path}, line {rawtext.line_of(path, row)}, field '{field}': duplicate feed id {ids[row]}")


def empty_cells(column) -> np.ndarray:
    """Which cells of a string column are empty or only spaces."""
    import pyarrow.compute as pc

    return pc.equal(pc.utf8_length(trimmed(column)), 0).to_numpy(zero_copy_only=False)


def integer_column(column, path, field: str, why: str, allow_empty: bool = True) -> np.ndarray:
    """A string column of integers to int64 (empty cells 0 when allowed: ``empty_cells`` tells
    them apart); the first bad cell is named by line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = trimmed(column)
    empty = empty_cells(column)
    good = pc.match_substring_regex(column, tokens.INTEGER).to_numpy(zero_copy_only=False) | (empty & allow_empty)
    if not good.all():
        row = int(np.argmin(good))
        raise RawFormatError(f"{path}, line {rawtext.line_of(path, row)}, field '{field}': "
                                    f"{why} (value {column[row].as_py()!r})")
    values = pc.if_else(pa_bool(empty), "0", column)
    return values.cast(pa.int64()).to_numpy(zero_copy_only=False)


TEXT_RECIPES = ("paper", "tfidf")
ITEM_RECIPES = {
    "paper": "paper: the authors' released recipe: padded-at-the-end token ids -> PCA(variance), plus unreduced "
             "parts (acoustic: bgm singer/song random embeddings; textual: padded machine keyword and tag ids) "
             "-> min-max",
    "tfidf": "tfidf: bag of tokens -> TF-IDF -> truncated SVD (energy share or fixed dim) -> min-max; "
             "acoustic = SVD of asr tokens + bgm singer/song random embeddings",
}


def _token_lists(feeds, settings: dict, source=FEED_FILE) -> tuple[dict[str, list[tokens.TokenLists]], np.ndarray]:
    """Each modality's token parts (the paper recipe PCAs the first and keeps the others as padded
    ids), and the bgm singer and song random embeddings (acoustic, appended after the PCA)."""
    import pyarrow.compute as pc

    name = str(source)  # errors name the file, and its lines when it is there to count
    ids = {field: tokens.parse_id_list(feeds.column(field), name, field) for field in ("description", "ocr", "asr_char")}
    ids["machine_keyword_list"] = tokens.parse_id_list(feeds.column("machine_keyword_list"), name,
                                                       "machine_keyword_list", ";")
    ids["machine_tag_list"] = tokens.parse_tag_list(feeds.column("machine_tag_list"), name, "machine_tag_list")
    # the fallbacks are parsed only where the primary field is empty (blank elsewhere, so line numbers hold)
    for fallback, primary, separator in (("ocr_char", "ocr", " "), ("asr", "asr_char", " "),
                                         ("description_char", "description", " "),
                                         ("manual_tag_list", "machine_tag_list", ";")):
        needed = pa_bool(ids[primary].lengths == 0)
        ids[fallback] = tokens.parse_id_list(pc.if_else(needed, feeds.column(fallback), ""), name, fallback, separator)
    music = []
    for offset, field in enumerate(("bgm_singer_id", "bgm_song_id")):
        values = integer_column(feeds.column(field), name, field, "expected an integer id")
        music.append(tokens.random_id_embedding(values, empty_cells(feeds.column(field)), settings["converter_seed"] + offset))
    lists = {
        "visual": [tokens.first_non_empty(ids["ocr"], ids["ocr_char"])],
        "acoustic": [tokens.first_non_empty(ids["asr_char"], ids["asr"])],
        "textual": [tokens.first_non_empty(ids["description"], ids["description_char"]), ids["machine_keyword_list"],
                    tokens.first_non_empty(ids["machine_tag_list"], ids["manual_tag_list"])],
    }
    return lists, np.hstack(music)


PART_NAMES = {"visual": ("ocr_pca",), "acoustic": ("asr_char_pca", "bgm_singer_song"),
              "textual": ("description_pca", "machine_keyword_list", "machine_tag_list")}


TOKEN_FIELDS = ("description", "ocr", "asr", "machine_keyword_list", "machine_tag_list", "ocr_char", "asr_char",
                "description_char", "manual_tag_list")


def empty_token_fields(feeds, used: np.ndarray) -> dict:
    """How many kept items have each token field empty, and how many have no token at all for
    a modality after the recipe's fallbacks (ocr -> ocr_char; asr_char -> asr; description ->
    description_char; machine_tag_list -> manual_tag_list): real WeChat rows
    often have empty fields, which are read as no tokens (a zero padded row), not as errors."""
    empty = {field: empty_cells(feeds.column(field)) & used for field in TOKEN_FIELDS}
    return {
        "fields": {field: int(mask.sum()) for field, mask in empty.items()},
        "items_without_visual_tokens": int((empty["ocr"] & empty["ocr_char"]).sum()),
        "items_without_acoustic_tokens": int((empty["asr_char"] & empty["asr"]).sum()),
        "items_without_textual_tokens": int((empty["description"] & empty["description_char"]
                                             & empty["machine_keyword_list"] & empty["machine_tag_list"]
                                             & empty["manual_tag_list"]).sum()),
    }


def pa_bool(mask: np.ndarray):
    import pyarrow as pa

    return pa.array(mask, type=pa.bool_())


def _fixed_target(settings: dict, name: str, unreduced: int):
    """The reduced part's target: what a fixed ``<name>_dim`` leaves after the unreduced parts,
    else the variance share. A width the unreduced parts alone fill is refused."""
    fixed = settings.get(f"{name}_dim")
    if not fixed:
        return float(settings["pca_variance"])
    if int(fixed) <= unreduced:
        raise ValueError(f"{name}_dim {fixed} leaves no column for the reduced part: the {name} modality's "
                         f"unreduced parts are {unreduced} columns wide here; use at least {unreduced + 1}")
    return int(fixed) - unreduced


def paper_modalities(feeds, settings: dict, source=FEED_FILE) -> tuple[dict[str, np.ndarray], dict]:
    """The authors' recipe (module docstring), one modality at a time in one reused buffer (one
    padded matrix, 100 k x 512 float64 = 0.4 GB on the full data, at a time): the first part's
    padded ids -> PCA, the other parts appended unreduced, then per-column min-max. Returns the
    matrices and each part's width."""
    lists, music = _token_lists(feeds, settings, source)
    maxlen = settings["token_maxlen"]
    buffer = np.empty(len(music) * max(tokens.padded_width(parts[0], maxlen) for parts in lists.values()))
    reduced, widths = {}, {}
    for name, parts in lists.items():
        unreduced = [tokens.pad_sequences(part, maxlen).astype(np.float32) for part in parts[1:]]
        if name == "acoustic":
            unreduced.append(music)
        matrix = tokens.pad_sequences(parts[0], maxlen, buffer=buffer)
        target = _fixed_target(settings, name, sum(part.shape[1] for part in unreduced))
        # the padded matrix is ours and not needed afterwards: PCA may centre it in place
        pieces = [pca_reduce(matrix, target, overwrite=True)] + unreduced
        reduced[name] = minmax_scale(np.hstack(pieces))
        widths[name] = {part: int(piece.shape[1]) for part, piece in zip(PART_NAMES[name], pieces)}
    return reduced, widths


def tfidf_modalities(feeds, settings: dict, source=FEED_FILE) -> tuple[dict[str, np.ndarray], dict]:
    """The ``tfidf`` recipe (prepare/text.py): each modality's token parts as one bag, min-max
    scaled; acoustic keeps the bgm embeddings unreduced."""
    lists, music = _token_lists(feeds, settings, source)
    reduced, widths = {}, {}
    for name, parts in lists.items():
        extra = music.shape[1] if name == "acoustic" else 0
        bag = tokens.join_lists(*parts) if len(parts) > 1 else parts[0]
        matrix = text.tfidf_svd(bag, _fixed_target(settings, name, extra), seed=settings["converter_seed"],
                                max_dim=int(settings["text_max_dim"]))
        widths[name] = {"tfidf_svd": int(matrix.shape[1])}
        if extra:
            matrix = np.hstack([matrix, music])
            widths[name]["bgm_singer_song"] = extra
        reduced[name] = minmax_scale(matrix)
    return reduced, widths


EMBEDDING_DIM = 512


def read_feed_embeddings(path: Path, feed_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``feedid,feed_embedding`` (512 space-separated floats) -> (rows aligned with ``feed_ids``,
    which rows had an embedding, how many embeddings belong to no feed in ``feed_ids``).

    Feeds without an embedding get zeros; embeddings of unknown feeds are ignored. Errors name
    file, line and field: wrong length, NaN/inf, non-numeric values, duplicate feed ids.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(path)
    header = rawtext.check_header(path, ("feedid", "feed_embedding"), "WeChat raw file")
    try:
        table = rawtext.read_table(path, header, ("feedid", "feed_embedding"),
                                 {"feedid": pa.string(), "feed_embedding": pa.string()})
    except FastReadFailed as error:
        raise rawtext.diagnose_csv(path, header, error) from None
    ids = integer_column(table.column("feedid"), path, "feedid", "expected an integer feed id", allow_empty=False)
    check_unique(ids, path, "feedid")

    def fail(row: int, why: str) -> RawFormatError:
        return RawFormatError(f"{path}, line {rawtext.line_of(path, row)}, field 'feed_embedding': {why}")

    cells = trimmed(table.column("feed_embedding"))
    pieces = pc.utf8_split_whitespace(cells)
    counts = np.where(empty_cells(cells), 0, pc.list_value_length(pieces).to_numpy(zero_copy_only=False))
    if len(counts) and (counts != EMBEDDING_DIM).any():
        row = int(np.argmax(counts != EMBEDDING_DIM))
        raise fail(row, f"expected {EMBEDDING_DIM} space-separated floats, got {counts[row]}")
    flat = pc.list_flatten(pieces)
    numeric = pc.match_substring_regex(flat, tokens.FLOAT + "|^[-+]?(nan|inf|infinity)$",
                                       ignore_case=True).to_numpy(zero_copy_only=False)
    if not numeric.all():
        at = int(np.argmin(numeric))
        raise fail(at // EMBEDDING_DIM, f"expected a number (value {flat[at].as_py()!r})")
    values = flat.cast(pa.float64()).to_numpy(zero_copy_only=False).reshape(-1, EMBEDDING_DIM)
    finite = np.isfinite(values)
    if not finite.all():
        at = int(np.argmin(finite.ravel()))
        raise fail(at // EMBEDDING_DIM, f"NaN or infinite value ({flat[at].as_py()!r})")
    rows = rows_in(feed_ids, ids)  # each feed's embedding row, -1 without one
    covered = rows >= 0
    matrix = np.zeros((len(feed_ids), EMBEDDING_DIM), dtype=np.float32)
    matrix[covered] = values[rows[covered]]
    unknown = int(len(ids) - len(np.intersect1d(ids, feed_ids)))
    return matrix, covered, unknown


def build_modalities(feeds, settings: dict, source=FEED_FILE) -> tuple[dict[str, np.ndarray], dict]:
    """(one matrix per modality, each part's width) by ``text_recipe``."""
    recipe = settings["text_recipe"]
    if recipe == "tfidf":
        return tfidf_modalities(feeds, settings, source)
    return paper_modalities(feeds, settings, source)


INTER_TYPES = {"user_id": "token", "item_id": "token", "timestamp": "float", "label": "float", "device": "float"}
ITEM_TYPES = {"item_id": "token", "author_id": "token", "duration": "float"}


@contextmanager
def arrow_memory_pool():
    """pyarrow's jemalloc pool while converting: token parsing makes millions of small strings,
    and with the default (mimalloc) pool this VM spent ~1 s of system time returning and
    re-faulting their pages. The previous default is restored afterwards."""
    import pyarrow as pa

    previous = pa.default_memory_pool()
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc: keep the default
        pool = previous
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


DENSE_ID_LIMIT = 50_000_000  # ids below this index a lookup table directly (real ids: < 300 k)


def rows_in(ids: np.ndarray, table_ids: np.ndarray) -> np.ndarray:
    """The row of each id in ``table_ids`` (distinct), -1 where absent."""
    if not len(table_ids):
        return np.full(len(ids), -1, dtype=np.int64)
    if table_ids.min() >= 0 and table_ids.max() < DENSE_ID_LIMIT:
        lookup = np.full(int(table_ids.max()) + 1, -1, dtype=np.int64)
        lookup[table_ids] = np.arange(len(table_ids))
        inside = (ids >= 0) & (ids < len(lookup))
        return np.where(inside, lookup[np.where(inside, ids, 0)], -1)
    order = np.argsort(table_ids, kind="stable")
    position = np.searchsorted(table_ids[order], ids).clip(max=len(table_ids) - 1)
    return np.where(table_ids[order][position] == ids, order[position], -1)


def per_value_counts(values: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """For each row, how many ``counted`` rows share its value."""
    _, codes = tokens.dense_codes(values)
    return np.bincount(codes, weights=counted).astype(np.int64)[codes]


def distinct_count(values: np.ndarray) -> int:
    return len(tokens.dense_codes(values)[0])


def chronological(rows: np.ndarray, days: np.ndarray) -> np.ndarray:
    """``rows`` ordered by day, file order within a day (a stable sort; radix on small day ranges)."""
    keys = days[rows]
    if len(keys) and int(keys.max()) - int(keys.min()) < 2**16:
        keys = (keys - keys.min()).astype(np.uint16)
    return rows[np.argsort(keys, kind="stable")]


def kept_rows(actions: dict, labels: np.ndarray, known: np.ndarray, settings: dict, dropped: dict) -> np.ndarray:
    """The rows written, in .inter order: feeds known, duplicates dropped (``dedupe``), users with
    at least ``min_user_actions`` rows left, ordered by ``row_order`` (module docstring). Each
    drop is counted in ``dropped``."""
    users = actions["userid"]
    rows = np.flatnonzero(known)
    positions = None
    if settings["dedupe"] == "user_feed_label" or settings["row_order"] == "authors":
        # the authors' set holds every raw row's triple: its order depends on all of them
        positions = set_order_positions(users, actions["feedid"], labels.astype(np.int64))
    if settings["dedupe"] == "user_feed_label":
        first = np.zeros(len(users), dtype=bool)
        first[np.unique(positions, return_index=True)[1]] = True
        dropped["duplicate_user_feed_label"] = int((known & ~first).sum())
        rows = rows[first[rows]]
    counted = np.zeros(len(users), dtype=bool)
    counted[rows] = True
    enough = per_value_counts(users, counted) >= settings["min_user_actions"]
    dropped["user_below_min_actions"] = int((counted & ~enough).sum())
    rows = rows[enough[rows]]
    if settings["row_order"] == "authors":
        return authors_order(rows, users, positions)
    return chronological(rows, actions["date_"])


def rows_by_day(days: np.ndarray, row_order: str) -> list[list[int]] | None:
    """``[[day, rows], ...]`` of the written rows, in .inter order: with ``row_order:
    chronological`` the rows of each day are one block, so a row's day follows from its position
    (``timestamp``); the day split (``paper_split.py``, ``split_rule: day``) reads it. None for
    ``row_order: authors``, where days interleave."""
    if row_order != "chronological":
        return None
    values, counts = np.unique(days, return_counts=True)
    return [[int(day), int(count)] for day, count in zip(values, counts)]


def row_devices(actions: dict, order: np.ndarray, choice: str) -> np.ndarray:
    """The device written on each kept row: its own (``row``) or its user's as the authors choose
    it from every raw row (``last_pair``, ``paper_split.last_pair_device``)."""
    if choice == "row":
        return actions["device"][order]
    users, devices = last_pair_device(actions["userid"], actions["device"])
    return devices[np.searchsorted(users, actions["userid"][order])]


def convert(raw_dir: Path, out_dir: Path, settings: dict | None = None, force: bool = False) -> dict:
    """Convert WeChat raw files; skip when the manifest shows the same inputs and settings."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    settings = complete_settings("wechat", SETTINGS, settings)
    label_name = settings["label_action"]
    require(settings, "label_action", label_name == "weighted" or label_name in ACTIONS,
            f"'weighted' or one of {', '.join(ACTIONS)}")
    require(settings, "text_recipe", settings["text_recipe"] in TEXT_RECIPES, f"one of {', '.join(TEXT_RECIPES)}")
    for name, choices in ROW_CHOICES.items():
        require(settings, name, settings[name] in choices, f"one of {', '.join(choices)}")
    for name in ("visual_dim", "acoustic_dim", "textual_dim", "embedding_dim", "text_max_dim", "token_maxlen"):
        # None: a width from the variance share (the *_dim settings)
        require(settings, name, settings[name] is None or is_integer(settings[name], 1), "a positive integer")
    require(settings, "min_user_actions", is_integer(settings["min_user_actions"]), "an integer >= 0")
    require(settings, "pca_variance", is_share(settings["pca_variance"]), "a share in (0, 1]")
    require(settings, "feed_embedding", isinstance(settings["feed_embedding"], bool), "true or false")
    require(settings, "item_float_seq", isinstance(settings["item_float_seq"], bool), "true or false")
    require(settings, "action_labels", isinstance(settings["action_labels"], bool), "true or false")
    require(settings, "converter_seed", is_integer(settings["converter_seed"]), "an integer >= 0")
    inputs = required_files(raw_dir)
    for path in inputs:
        if not path.exists():
            raise MissingInputError(f"{path}: file not found (expected the WeChat raw file {path.name})")
    embedding_path = raw_dir / EMBEDDING_FILE
    if settings["feed_embedding"] and not embedding_path.exists():
        raise MissingInputError(f"{embedding_path}: file not found (feed_embedding is on; expected {EMBEDDING_FILE})")
    oracle_path = raw_dir / ORACLE_FILE
    print_fp = fingerprint(inputs + ([embedding_path] if settings["feed_embedding"] else [])
                           + ([oracle_path] if oracle_path.exists() else []), settings)
    with folder_lock(out_dir):  # a second process converting the same folder waits, then skips
        done = skip_conversion(out_dir, raw_dir, print_fp, force)
        if done is not None:
            return done
        return _write_dataset(raw_dir, out_dir, settings, inputs, embedding_path, oracle_path, print_fp)


def no_rows_left(path: Path, n_rows: int, dropped: dict, minimum: int, most: int):
    """The error for filters that keep no row (the old output stays: nothing is committed)."""
    if dropped["feed_not_in_feed_info"] == n_rows:
        return InputError(f"{path}: no rows left after the feed filter: none of the {n_rows:,} actions has a feedid "
                          f"listed in {FEED_FILE}")
    return InputError(f"{path}: no rows left after the user filter: min_user_actions {minimum:,} drops all "
                      f"{n_rows - dropped['feed_not_in_feed_info']:,} actions of feeds in {FEED_FILE} (the most "
                      f"active user has {most:,}); lower min_user_actions")


def _write_dataset(raw_dir: Path, out_dir: Path, settings: dict, inputs: list, embedding_path: Path,
                   oracle_path: Path, print_fp: str) -> dict:
    """The conversion itself, once ``convert`` has checked the settings and holds the folder."""
    label_name = settings["label_action"]
    started = time.time()
    # The .inter is written in a background thread (pyarrow's writer releases the GIL) while the
    # modalities are built. The executor is left first, waiting for that thread, then pyarrow's
    # default pool is restored, then the AtomicWriter renames (or, on any failure, discards).
    with AtomicWriter(out_dir) as writer, arrow_memory_pool(), ThreadPoolExecutor(max_workers=1) as background:
        log(f"reading {inputs[0]}")
        actions = read_actions(inputs[0])
        n_rows = len(actions["userid"])
        log(f"{n_rows:,} actions read")
        weighted = weighted_label(actions)
        labels = weighted if label_name == "weighted" else actions[label_name].astype(np.float32)
        action_rates = {name: float(actions[name].mean()) for name in ACTIONS}  # n_rows > 0: read_actions checks
        action_rates["weighted"] = float(weighted.mean())

        log(f"reading {inputs[1]}")
        feeds, feed_ids = read_feeds(inputs[1])
        duration = float_column(feeds.column("videoplayseconds"), inputs[1], "videoplayseconds")
        oracle = read_oracle(oracle_path, n_rows, label_name)

        dropped = {}
        feed_row = rows_in(actions["feedid"], feed_ids)
        known = feed_row >= 0
        dropped["feed_not_in_feed_info"] = int((~known).sum())
        order = kept_rows(actions, labels, known, settings, dropped)
        if not len(order):
            most = int(per_value_counts(actions["userid"], known).max())
            raise no_rows_left(inputs[0], n_rows, dropped, settings["min_user_actions"], most)
        log(f"{len(order):,} actions kept ({dropped})")
        inter = {
            "user_id": actions["userid"][order],
            "item_id": actions["feedid"][order],
            "timestamp": np.arange(len(order), dtype=np.int64),
            "label": labels[order].astype(np.int64),  # 0/1: integers write much faster than floats
            "device": row_devices(actions, order, settings["device_choice"]),
        }
        inter_types = dict(INTER_TYPES)
        if settings["action_labels"]:
            for name in ACTIONS:
                inter[action_label_field(name)] = actions[name][order]
                inter_types[action_label_field(name)] = "float"
        inter_written = background.submit(writer.write_table, "wechat.inter", inter, inter_types)
        if oracle is not None:  # kept rows only, in .inter order: the true probability of the chosen label
            writer.write_array("wechat.oracle.npy", oracle[order].astype(np.float32))
        used = np.zeros(len(feed_ids), dtype=bool)
        used[feed_row[order]] = True
        item_ids = feed_ids[used]
        actions_days = actions["date_"][order]
        del actions, labels, weighted, oracle

        log(f"building modalities for {len(feed_ids):,} feeds ({settings['text_recipe']} recipe, "
            f"keeping {settings['pca_variance']:.0%} of the variance)")
        reduced, parts = build_modalities(feeds, settings, inputs[1])
        embedding_counts = None
        if settings["feed_embedding"]:
            log(f"reading {embedding_path}")
            embeddings, covered, unknown = read_feed_embeddings(embedding_path, feed_ids)
            target = settings.get("embedding_dim") or settings["pca_variance"]
            reduced["embedding"] = minmax_scale(pca_reduce(embeddings, target))
            embedding_counts = {"feeds_without_embedding": int((~covered).sum()),
                                "items_without_embedding": int((~covered[used]).sum()),
                                "embeddings_of_unknown_feeds": unknown}
        kept = {name: matrix[used] for name, matrix in reduced.items()}
        writer.write_table("wechat.item", *item_float_seq(
            {"item_id": item_ids, "author_id": feeds.column("authorid").to_numpy()[used], "duration": duration[used]},
            ITEM_TYPES, kept, settings["item_float_seq"]))
        writer.write_arrays("wechat.mm.npz", {"item_id": item_ids.astype(str), **kept})
        dims = {name: int(matrix.shape[1]) for name, matrix in reduced.items()}
        inter_written.result()
        manifest = {
            "dataset": "wechat",
            "source": str(raw_dir.resolve()),
            "synthetic": (raw_dir / "SYNTHETIC.json").exists(),
            "fingerprint": print_fp,
            "settings": settings,
            "item_recipe": ITEM_RECIPES[settings["text_recipe"]],
            "text_recipe": settings["text_recipe"],
            "rows": {"raw_actions": n_rows, "inter": len(order), "items": len(item_ids),
                     "feeds_in_feed_info": len(feed_ids), "users": distinct_count(inter["user_id"])},
            "dropped": dropped,
            "rows_by_day": rows_by_day(actions_days, settings["row_order"]),
            "label": label_name,
            "label_rate": float(inter["label"].mean()),
            "action_labels": [action_label_field(name) for name in ACTIONS] if settings["action_labels"] else [],
            "action_rates": action_rates,
            "modality_dims": dims,
            "modality_parts": parts,
            "feed_embedding": embedding_counts,
            "empty_token_fields": empty_token_fields(feeds, used),
            "seconds": round(time.time() - started, 2),
        }
        writer.write_manifest(manifest)
    log(f"wrote {out_dir} in {manifest['seconds']} s: {len(order):,} interactions, {len(item_ids):,} items, dims {dims}")
    return manifest
