"""WeChat Big Data Challenge 2021 raw files -> RecBole atomic files plus modality matrices.

Inputs (``RAW_DIR``; formats in DATA.md): ``user_action.csv``, ``feed_info.csv`` and, unused by
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
- ``manifest.json``: fingerprint, settings, row counts, dropped rows and why, dimensions.

The paper's item recipe (DATA.md): visual = ocr ids (empty -> ocr_char); acoustic = asr_char ids
(empty -> asr) plus fixed random embeddings of bgm_singer_id and bgm_song_id; textual =
description + machine keywords + machine tag ids. Each is zero-padded, reduced by PCA keeping
``variance`` of the variance and min-max scaled per column (``text_recipe: paper``, the default).
``text_recipe: tfidf`` treats each modality's tokens as a bag instead: TF-IDF, then truncated SVD
to the fewest components holding ``variance`` of the energy (capped at ``text_max_dim``) or to a
fixed ``<modality>_dim``, then min-max (prepare/text.py); the bgm embeddings still join acoustic.
``feed_embedding: true`` adds a fourth matrix, ``embedding``: the 512-d feed embeddings, PCA
keeping ``variance`` (or ``embedding_dim``), min-max; feeds without one get zeros (counted in the
manifest). Fusion names only use visual/acoustic/textual, so the model ignores it today. Labels: ``weighted`` (the paper's
weighted sum of seven actions / 13 >= 0.5) or any single action.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..fusion import minmax_scale, pca_reduce
from . import text, tokens
from .atomic import AtomicWriter, fingerprint, is_up_to_date, log, read_manifest

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
)
DEFAULT_SETTINGS = {
    "label": "weighted",
    "min_user_actions": 100,
    "variance": 0.9,
    "token_maxlen": 512,
    "seed": 2024,
    "text_recipe": "paper",
    "text_max_dim": 128,
    "feed_embedding": False,
}


def read_oracle(path: Path, n_rows: int, label_name: str) -> np.ndarray | None:
    """Generated samples carry each row's true label probability (``oracle_prob.csv``); real data not."""
    if not path.exists():
        return None
    column = f"p_{label_name}"
    frame = pd.read_csv(path, usecols=[column], dtype=np.float64)
    if len(frame) != n_rows:
        raise tokens.RawFormatError(f"{path}: {len(frame)} rows, but {ACTION_FILE} has {n_rows}")
    return frame[column].to_numpy()


def required_files(raw_dir: Path) -> list[Path]:
    return [Path(raw_dir) / ACTION_FILE, Path(raw_dir) / FEED_FILE]


def has_raw_files(raw_dir: Path) -> bool:
    return all(path.exists() for path in required_files(raw_dir))


def _check_header(path: Path, needed: tuple[str, ...]) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found (expected the WeChat raw file {path.name})")
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    missing = [column for column in needed if column not in header]
    if missing:
        raise tokens.RawFormatError(f"{path}, line 1: missing column(s) {', '.join(missing)}")


def weighted_label(actions: pd.DataFrame) -> np.ndarray:
    """The paper's label: weighted sum of the seven actions / 13 >= 0.5."""
    total = sum(ACTION_WEIGHTS[name] * actions[name].to_numpy(dtype=np.int64) for name in ACTIONS)
    return (total / sum(ACTION_WEIGHTS.values()) >= 0.5).astype(np.float32)


def read_actions(path: Path) -> pd.DataFrame:
    _check_header(path, ACTION_COLUMNS)
    try:  # fast path: pandas' C reader, every column an integer (faster and leaner than engine="pyarrow" here)
        frame = pd.read_csv(path, usecols=list(ACTION_COLUMNS), dtype={c: np.int64 for c in ACTION_COLUMNS},
                            engine="c")
    except Exception:  # noqa: BLE001 - anything unexpected: the checking reader below names the cell
        frame = None
    if frame is not None and len(frame.columns) == len(ACTION_COLUMNS):
        out = {column: frame[column].to_numpy(dtype=np.int64) for column in ACTION_COLUMNS}
    else:
        out = _read_actions_checked(path)
    for name in ACTIONS:
        bad = ~np.isin(out[name], (0, 1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise tokens.RawFormatError(f"{path}, line {row + 2}, field '{name}': expected 0 or 1 (value {out[name][row]})")
    return pd.DataFrame(out)


def _read_actions_checked(path: Path) -> dict[str, np.ndarray]:
    """The slow reader: every cell as text, the first non-integer one named by line and field."""
    frame = pd.read_csv(path, usecols=list(ACTION_COLUMNS), dtype=str, keep_default_na=False)
    out = {}
    for column in ACTION_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise tokens.RawFormatError(
                f"{path}, line {row + 2}, field '{column}': expected an integer (value {frame[column].iat[row]!r})"
            )
        out[column] = values.to_numpy(dtype=np.int64)
    return out


TEXT_RECIPES = ("paper", "tfidf")
ITEM_RECIPES = {
    "paper": "paper: padded token ids -> PCA(variance) -> min-max",
    "tfidf": "tfidf: bag of tokens -> TF-IDF -> truncated SVD (energy share or fixed dim) -> min-max; "
             "acoustic = SVD of asr tokens + bgm singer/song random embeddings",
}


def _token_lists(feeds: pd.DataFrame, settings: dict) -> tuple[dict[str, list[np.ndarray]], np.ndarray]:
    """Each modality's per-feed token ids, and the bgm singer/song random embeddings (acoustic)."""
    name = FEED_FILE
    ids = {field: tokens.parse_id_list(feeds[field].to_numpy(), name, field) for field in ("description", "ocr", "asr_char")}
    # the fallbacks are parsed only where the primary field is empty (blank elsewhere, so line numbers hold)
    for fallback, primary in (("ocr_char", "ocr"), ("asr", "asr_char")):
        needed = np.array([len(x) == 0 for x in ids[primary]], dtype=bool)
        ids[fallback] = tokens.parse_id_list(np.where(needed, feeds[fallback].to_numpy(), ""), name, fallback)
    keywords = tokens.parse_id_list(feeds["machine_keyword_list"].to_numpy(), name, "machine_keyword_list", ";")
    tags = tokens.parse_tag_list(feeds["machine_tag_list"].to_numpy(), name, "machine_tag_list")
    music = []
    for offset, field in enumerate(("bgm_singer_id", "bgm_song_id")):
        values = pd.to_numeric(feeds[field].replace("", np.nan), errors="coerce")
        raw = feeds[field].to_numpy()
        bad = values.isna().to_numpy() & (raw != "")
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise tokens.RawFormatError(f"{name}, line {row + 2}, field '{field}': expected an integer id (value {raw[row]!r})")
        missing = values.isna().to_numpy()
        music.append(tokens.random_id_embedding(values.fillna(0).to_numpy(np.int64), missing, settings["seed"] + offset))
    lists = {
        "visual": tokens.first_non_empty(ids["ocr"], ids["ocr_char"]),
        "acoustic": tokens.first_non_empty(ids["asr_char"], ids["asr"]),
        "textual": tokens.join_lists(ids["description"], keywords, tags),
    }
    return lists, np.hstack(music)


def item_modalities(feeds: pd.DataFrame, settings: dict) -> dict[str, np.ndarray]:
    """The paper's three raw modality matrices for the given feed rows (before PCA)."""
    lists, music = _token_lists(feeds, settings)
    maxlen = settings["token_maxlen"]
    raw = {name: tokens.pad_sequences(sequences, maxlen) for name, sequences in lists.items()}
    raw["acoustic"] = np.hstack([raw["acoustic"], music])
    return raw


def reduce_modalities(raw: dict[str, np.ndarray], settings: dict) -> dict[str, np.ndarray]:
    """PCA (variance share or fixed width) then per-column min-max scaling, per modality."""
    reduced = {}
    for name, matrix in raw.items():
        target = settings.get(f"{name}_dim") or settings["variance"]
        reduced[name] = minmax_scale(pca_reduce(matrix, target, seed=settings["seed"]))
    return reduced


def tfidf_modalities(feeds: pd.DataFrame, settings: dict) -> dict[str, np.ndarray]:
    """The ``tfidf`` recipe (prepare/text.py), min-max scaled. A fixed ``<modality>_dim`` is the
    final width: for acoustic, the SVD gets what the bgm embeddings leave (at least 1 column)."""
    lists, music = _token_lists(feeds, settings)
    reduced = {}
    for name, sequences in lists.items():
        fixed = settings.get(f"{name}_dim")
        extra = music.shape[1] if name == "acoustic" else 0
        target = max(int(fixed) - extra, 1) if fixed else float(settings["variance"])
        matrix = text.tfidf_svd(sequences, target, seed=settings["seed"], max_dim=int(settings["text_max_dim"]))
        if extra:
            matrix = np.hstack([matrix, music])
        reduced[name] = minmax_scale(matrix)
    return reduced


EMBEDDING_DIM = 512


def read_feed_embeddings(path: Path, feed_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``feedid,feed_embedding`` (512 space-separated floats) -> (rows aligned with ``feed_ids``,
    which rows had an embedding, how many embeddings belong to no feed in ``feed_ids``).

    Feeds without an embedding get zeros; embeddings of unknown feeds are ignored. Errors name file, line and field: wrong length, NaN/inf, non-numeric values,
    duplicate feed ids.
    """
    path = Path(path)
    _check_header(path, ("feedid", "feed_embedding"))
    frame = pd.read_csv(path, usecols=["feedid", "feed_embedding"], dtype=str, keep_default_na=False)
    duplicated = frame["feedid"].duplicated().to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise tokens.RawFormatError(f"{path}, line {row + 2}, field 'feedid': duplicate feed id {frame['feedid'].iat[row]!r}")
    position = {fid: i for i, fid in enumerate(np.asarray(feed_ids, dtype=str).tolist())}
    matrix = np.zeros((len(feed_ids), EMBEDDING_DIM), dtype=np.float32)
    covered = np.zeros(len(feed_ids), dtype=bool)
    unknown = 0
    for row, (fid, cell) in enumerate(zip(frame["feedid"].tolist(), frame["feed_embedding"].tolist())):
        where = f"{path}, line {row + 2}, field 'feed_embedding'"
        parts = cell.split()
        if len(parts) != EMBEDDING_DIM:
            raise tokens.RawFormatError(f"{where}: expected {EMBEDDING_DIM} space-separated floats, got {len(parts)}")
        try:
            values = np.array(parts, dtype=np.float64)
        except ValueError:
            bad = next(part for part in parts if not _is_float(part))
            raise tokens.RawFormatError(f"{where}: expected a number (value {bad!r})") from None
        if not np.isfinite(values).all():
            bad = parts[int(np.flatnonzero(~np.isfinite(values))[0])]
            raise tokens.RawFormatError(f"{where}: NaN or infinite value ({bad!r})")
        at = position.get(fid.strip())
        if at is None:
            unknown += 1
            continue
        matrix[at] = values
        covered[at] = True
    return matrix, covered, unknown


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_modalities(feeds: pd.DataFrame, settings: dict) -> dict[str, np.ndarray]:
    recipe = settings["text_recipe"]
    if recipe == "tfidf":
        return tfidf_modalities(feeds, settings)
    return reduce_modalities(item_modalities(feeds, settings), settings)


def convert(raw_dir: Path, out_dir: Path, settings: dict | None = None, force: bool = False) -> dict:
    """Convert WeChat raw files; skip when the manifest shows the same inputs and settings."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    label_name = settings["label"]
    if label_name != "weighted" and label_name not in ACTIONS:
        raise ValueError(f"label must be 'weighted' or one of {', '.join(ACTIONS)}; got {label_name!r}")
    if settings["text_recipe"] not in TEXT_RECIPES:
        raise ValueError(f"text_recipe must be one of {', '.join(TEXT_RECIPES)}; got {settings['text_recipe']!r}")
    inputs = required_files(raw_dir)
    for path in inputs:
        if not path.exists():
            raise FileNotFoundError(f"{path}: file not found (expected the WeChat raw file {path.name})")
    embedding_path = raw_dir / EMBEDDING_FILE
    if settings["feed_embedding"] and not embedding_path.exists():
        raise FileNotFoundError(f"{embedding_path}: file not found (feed_embedding is on; expected {EMBEDDING_FILE})")
    oracle_path = raw_dir / ORACLE_FILE
    print_fp = fingerprint(inputs + ([embedding_path] if settings["feed_embedding"] else [])
                           + ([oracle_path] if oracle_path.exists() else []), settings)
    if not force and is_up_to_date(out_dir, print_fp):
        log(f"{out_dir} is up to date with {raw_dir} (fingerprint {print_fp[:12]}); skipping conversion")
        return read_manifest(out_dir)

    started = time.time()
    log(f"reading {inputs[0]}")
    actions = read_actions(inputs[0])
    n_rows = len(actions)
    log(f"{n_rows:,} actions read")
    actions["label"] = weighted_label(actions) if label_name == "weighted" else actions[label_name].astype(np.float32)
    action_rates = {name: float(actions[name].mean()) if n_rows else 0.0 for name in ACTIONS}
    action_rates["weighted"] = float(weighted_label(actions).mean()) if n_rows else 0.0

    log(f"reading {inputs[1]}")
    _check_header(inputs[1], FEED_COLUMNS)
    feeds = pd.read_csv(inputs[1], usecols=list(FEED_COLUMNS), dtype=str, keep_default_na=False)
    duplicated = feeds["feedid"].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise tokens.RawFormatError(f"{inputs[1]}, line {row + 2}, field 'feedid': duplicate feed id {feeds['feedid'].iat[row]!r}")

    oracle = read_oracle(oracle_path, n_rows, label_name)
    dropped = {}
    known = actions["feedid"].astype(str).isin(set(feeds["feedid"]))
    dropped["feed_not_in_feed_info"] = int((~known).sum())
    actions = actions[known.to_numpy()]
    counts = actions.groupby("userid")["userid"].transform("size")
    keep = (counts >= settings["min_user_actions"]).to_numpy()
    dropped["user_below_min_actions"] = int((~keep).sum())
    actions = actions[keep]
    actions = actions.iloc[np.argsort(actions["date_"].to_numpy(), kind="stable")]
    actions["timestamp"] = np.arange(len(actions), dtype=np.int64)
    log(f"{len(actions):,} actions kept ({dropped})")

    log(f"building modalities for {len(feeds):,} feeds ({settings['text_recipe']} recipe, "
        f"keeping {settings['variance']:.0%} of the variance)")
    reduced = build_modalities(feeds, settings)
    embedding_counts = None
    if settings["feed_embedding"]:
        log(f"reading {embedding_path}")
        embeddings, covered, unknown = read_feed_embeddings(embedding_path, feeds["feedid"].to_numpy())
        target = settings.get("embedding_dim") or settings["variance"]
        reduced["embedding"] = minmax_scale(pca_reduce(embeddings, target, seed=settings["seed"]))
    used = feeds["feedid"].isin(set(actions["feedid"].astype(str))).to_numpy()
    item_ids = feeds["feedid"].to_numpy()[used]
    if settings["feed_embedding"]:
        embedding_counts = {"feeds_without_embedding": int((~covered).sum()),
                            "items_without_embedding": int((~covered[used]).sum()),
                            "embeddings_of_unknown_feeds": unknown}

    inter = pd.DataFrame({
        "user_id": actions["userid"].to_numpy(),
        "item_id": actions["feedid"].to_numpy(),
        "timestamp": actions["timestamp"].to_numpy(),
        "label": actions["label"].to_numpy().astype(np.int64),  # 0/1: integers write much faster than floats
        "device": actions["device"].to_numpy(),
    })
    item = pd.DataFrame({
        "item_id": item_ids,
        "author_id": feeds["authorid"].to_numpy()[used],
        "duration": pd.to_numeric(feeds["videoplayseconds"], errors="coerce").fillna(0).to_numpy()[used],
    })
    dims = {name: int(matrix.shape[1]) for name, matrix in reduced.items()}
    manifest = {
        "dataset": "wechat",
        "source": str(raw_dir.resolve()),
        "synthetic": (raw_dir / "SYNTHETIC.json").exists(),
        "fingerprint": print_fp,
        "settings": settings,
        "item_recipe": ITEM_RECIPES[settings["text_recipe"]],
        "text_recipe": settings["text_recipe"],
        "rows": {"raw_actions": n_rows, "inter": len(inter), "items": len(item), "feeds_in_feed_info": len(feeds),
                 "users": int(inter["user_id"].nunique())},
        "dropped": dropped,
        "label": label_name,
        "label_rate": float(inter["label"].mean()) if len(inter) else 0.0,
        "action_rates": action_rates,
        "modality_dims": dims,
        "feed_embedding": embedding_counts,
        "files": ["wechat.inter", "wechat.item", "wechat.mm.npz"] + (["wechat.oracle.npy"] if oracle is not None else []),
        "seconds": None,
    }
    with AtomicWriter(out_dir) as writer:
        writer.write_table("wechat.inter", inter, {"user_id": "token", "item_id": "token", "timestamp": "float",
                                                   "label": "float", "device": "float"})
        writer.write_table("wechat.item", item, {"item_id": "token", "author_id": "token", "duration": "float"})
        writer.write_arrays("wechat.mm.npz", {"item_id": item_ids.astype(str),
                                              **{name: matrix[used] for name, matrix in reduced.items()}})
        if oracle is not None:
            # kept rows only, in .inter order: the true probability of the chosen label
            writer.write_array("wechat.oracle.npy", oracle[actions.index.to_numpy()].astype(np.float32))
        manifest["seconds"] = round(time.time() - started, 2)
        writer.write_json("manifest.json", manifest)
    log(f"wrote {out_dir} in {manifest['seconds']} s: {len(inter):,} interactions, {len(item):,} items, dims {dims}")
    return manifest
