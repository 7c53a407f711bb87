"""Bring your own dataset (docs/byo_dataset.md): atomic files + <name>.mm.npz written from scratch."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_settings
from recbole_mma4ctr.config import build_config
from recbole_mma4ctr.errors import InputError
from recbole_mma4ctr.utils import create_dataset

WIDTHS = {"visual": 32, "acoustic": 24, "textual": 28}


def write_byo(folder: Path, name: str = "byo", seed: int = 0, with_npz: bool = True) -> Path:
    """200 items in 5 clusters, 160 users each liking one cluster; the label follows that taste."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_clusters, per_user = 160, 200, 5, 110
    cluster = rng.integers(0, n_clusters, size=n_items)
    favourite = rng.integers(0, n_clusters, size=n_users)
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.integers(0, n_items, size=len(users))
    liked = cluster[items] == favourite[users]
    label = (rng.random(len(users)) < np.where(liked, 0.6, 0.05)).astype(float)
    order = rng.permutation(len(users))  # interleave users over time
    users, items, label = users[order], items[order], label[order]
    target = folder / name
    target.mkdir(parents=True)
    inter = pd.DataFrame({"user_id:token": [f"u{u}" for u in users], "item_id:token": [f"i{i}" for i in items],
                          "timestamp:float": np.arange(len(users), dtype=float), "label:float": label,
                          "device:float": rng.integers(1, 3, size=len(users)).astype(float)})
    inter.to_csv(target / f"{name}.inter", sep="\t", index=False)
    pd.DataFrame({"item_id:token": [f"i{i}" for i in range(n_items)]}).to_csv(target / f"{name}.item", sep="\t", index=False)
    if with_npz:
        matrices = {}
        for modality, width in WIDTHS.items():
            centres = rng.normal(size=(n_clusters, width))
            vectors = centres[cluster] + 0.5 * rng.normal(size=(n_items, width))
            span = vectors.max(axis=0) - vectors.min(axis=0)
            matrices[modality] = ((vectors - vectors.min(axis=0)) / span).astype(np.float32)
        np.savez(target / f"{name}.mm.npz", item_id=np.array([f"i{i}" for i in range(n_items)]), **matrices)
    return target


def byo_settings(tmp_path, **extra):
    return run_settings(tmp_path, **{"data_path": tmp_path / "data", "epochs": 8, "train_batch_size": 512, **extra})


def test_byo_dataset_runs_mma4ctr_and_a_baseline_end_to_end(tmp_path):
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    write_byo(tmp_path / "data")
    record = run_recbole_mma4ctr("MMa4CTR", "byo", None, byo_settings(tmp_path))
    assert record["model"] == "MMa4CTR" and record["dataset"] == "byo"
    assert Path(record["record_path"]).exists() and str(tmp_path / "results") in record["record_path"]
    assert record["features"]["input_dims"]["item_mm"] == sum(WIDTHS.values())
    assert set(record["test"]) == {"auc", "gauc", "uauc", "logloss"}
    assert record["test"]["auc"] > 0.6, record["test"]
    baseline = run_recbole_mma4ctr("BPR", "byo", None, byo_settings(tmp_path, epochs=2))
    assert baseline["model"] == "BPR" and baseline["dataset"] == "byo"
    assert set(baseline["test"]) == {"auc", "gauc", "uauc", "logloss"}
    assert Path(baseline["record_path"]).exists()


def test_a_missing_modality_file_is_named(tmp_path):
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    folder = write_byo(tmp_path / "data", name="nofeatures", with_npz=False)
    with pytest.raises(FileNotFoundError, match="modality file not found") as raised:
        run_recbole_mma4ctr("MMa4CTR", "nofeatures", None, byo_settings(tmp_path))
    assert str(folder / "nofeatures.mm.npz") in str(raised.value)


# ------------------------------------------------------------------ bad input (issue 10, item 6)
# Before these checks each case below trained (or crashed deep inside RecBole / numpy): ids that
# match no item gave a meaningless record with exit 0, a label of 2 was scored as a label.

LOADER = {"field_separator": "\t", "LABEL_FIELD": "label", "TIME_FIELD": "timestamp"}


def check_folder(folder: Path, name: str = "byo"):
    from recbole_mma4ctr.prepare.sources import check_atomic_files

    check_atomic_files(LOADER, folder, name)


def edit_line(path: Path, line: int, field: int, value: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    cells = lines[line - 1].rstrip("\n").split("\t")
    cells[field] = value
    lines[line - 1] = "\t".join(cells) + "\n"
    path.write_text("".join(lines))


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.unit
@pytest.mark.parametrize("value", ["2", "nan", "", "yes", "-1"])
def test_a_label_that_is_not_0_or_1_is_named(tmp_path, value):
    from recbole_mma4ctr.errors import InputError

    folder = write_byo(tmp_path, with_npz=False)
    edit_line(folder / "byo.inter", 7, 3, value)
    with pytest.raises(InputError) as raised:
        check_folder(folder)
    assert one_line(raised) == f"{folder / 'byo.inter'}, line 7, field 'label': expected a label of 0 or 1 (value {value!r})"


@pytest.mark.unit
def test_labels_written_as_floats_are_accepted(tmp_path):
    folder = write_byo(tmp_path, with_npz=False)  # pandas wrote 0.0 / 1.0
    assert "\t1.0\t" in (folder / "byo.inter").read_text()
    check_folder(folder)


@pytest.mark.unit
def test_a_short_line_an_encoding_and_a_header_are_named(tmp_path):
    from recbole_mma4ctr.errors import InputError

    folder = write_byo(tmp_path, with_npz=False)
    inter = folder / "byo.inter"
    good = inter.read_bytes()
    lines = good.decode().splitlines(keepends=True)
    inter.write_text("".join(lines[:11] + ["u1\ti2\t10\n"] + lines[12:]))
    with pytest.raises(InputError) as raised:
        check_folder(folder)
    assert one_line(raised) == (f"{inter}, line 12: expected 5 '\\t'-separated fields (user_id, item_id, timestamp, "
                                f"label, device), found 3")
    inter.write_bytes(good.replace(b"u17\t", "u17é\t".encode("latin-1"), 1))
    with pytest.raises(InputError, match=r"byo.inter, line \d+, field 'user_id': not valid UTF-8 text \(byte 0xe9"):
        check_folder(folder)
    inter.write_bytes(b"\xef\xbb\xbf" + good)
    with pytest.raises(InputError, match="line 1: the file starts with a UTF-8 byte-order mark"):
        check_folder(folder)
    inter.write_bytes(good.replace(b"label:float", b"label", 1))
    with pytest.raises(InputError, match=r"line 1, field 'label': expected 'name:type'"):
        check_folder(folder)
    inter.write_bytes(good.split(b"\n")[0] + b"\n")
    with pytest.raises(InputError, match="byo.inter: no rows below the header"):
        check_folder(folder)
    (folder / "byo.item").write_bytes("item_id:token\ni1\ni\xe9\n".encode("latin-1"))
    inter.write_bytes(good)
    with pytest.raises(InputError, match=r"byo.item, line 3, field 'item_id': not valid UTF-8"):
        check_folder(folder)


def write_archive(tmp_path, **arrays) -> Path:
    path = tmp_path / "x.mm.npz"
    np.savez(path, **arrays)
    return path


IDS = np.array(["a", "b", "c"])
GOOD = np.ones((3, 2), dtype=np.float32)


@pytest.mark.unit
@pytest.mark.parametrize("arrays, message", [
    ({"item_id": np.array([1, 2, 3]), "visual": GOOD},
     "field 'item_id': int64 ids; save the ids as strings equal to the .inter's item_id tokens"),
    ({"item_id": np.array([], dtype=str), "visual": np.zeros((0, 2))}, "field 'item_id': no rows"),
    ({"item_id": np.array(["a", "b", "a"]), "visual": GOOD}, "field 'item_id', row 2: duplicate id 'a' (also row 0)"),
    ({"item_id": IDS, "visual": np.ones((2, 2))}, "field 'visual': 2 rows, but item_id has 3; one row per id"),
    ({"item_id": IDS, "visual": np.array([[0, 1], [np.nan, 0], [1, 1]])},
     "field 'visual', row 1 (item_id 'b'), column 0: NaN or infinite value (nan)"),
    ({"item_id": IDS, "visual": np.array([[0, 1], [0, 0], [1, np.inf]])},
     "field 'visual', row 2 (item_id 'c'), column 1: NaN or infinite value (inf)"),
    ({"item_id": IDS, "visual": np.ones(3)}, "field 'visual': an array of shape (3,); expected a 2-d matrix"),
    ({"item_id": IDS.reshape(3, 1), "visual": GOOD}, "field 'item_id': an array of shape (3, 1); expected one id"),
    ({"item_id": IDS, "visual": np.array([["x", "y"]] * 3)}, "field 'visual': <U1 values; expected numbers"),
    ({"visual": GOOD}, "no 'item_id' array"),
    ({"item_id": np.array(["a", None, "c"], dtype=object), "visual": GOOD}, "field 'item_id': holds Python objects"),
])
def test_a_bad_modality_archive_is_named(tmp_path, arrays, message):
    from recbole_mma4ctr.errors import InputError
    from recbole_mma4ctr.prepare.byo import check_modality_archive

    path = write_archive(tmp_path, **arrays)
    with pytest.raises(InputError) as raised:
        check_modality_archive(path)
    assert one_line(raised).startswith(f"{path}") and message in str(raised.value)


@pytest.mark.unit
def test_a_good_archive_loads_as_strings_and_float32(tmp_path):
    from recbole_mma4ctr.prepare.byo import check_modality_archive

    ids, matrices = check_modality_archive(write_archive(tmp_path, item_id=IDS, visual=GOOD.astype(np.float64)))
    assert ids.tolist() == ["a", "b", "c"] and matrices["visual"].dtype == np.float32


def test_a_label_of_2_stops_the_run_before_training(tmp_path):
    from recbole_mma4ctr.errors import InputError
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    folder = write_byo(tmp_path / "data")
    edit_line(folder / "byo.inter", 30, 3, "2")
    with pytest.raises(InputError, match=r"byo.inter, line 30, field 'label': expected a label of 0 or 1"):
        run_recbole_mma4ctr("BPR", "byo", None, byo_settings(tmp_path, epochs=1))
    assert not (tmp_path / "saved").exists()  # stopped before a trainer existed


@pytest.mark.parametrize("kept, ids_as, message", [
    (0.3, str, "only 60 of the 200 items in the interactions (30%) have vectors; min_item_feature_coverage is 0.5"),
    (1.0, "other", "only 0 of the 200 items in the interactions (0%) have vectors"),
])
def test_too_few_interacted_items_with_vectors_is_refused(tmp_path, kept, ids_as, message):
    from recbole_mma4ctr.errors import InputError
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    folder = write_byo(tmp_path / "data")
    with np.load(folder / "byo.mm.npz") as archive:
        arrays = {name: archive[name] for name in archive.files}
    n = int(round(kept * len(arrays["item_id"])))
    arrays = {name: values[:n] for name, values in arrays.items()}
    if ids_as == "other":  # ids that look right but name no item of the .inter
        arrays["item_id"] = np.array([f"item{i}" for i in range(n)])
    np.savez(folder / "byo.mm.npz", **arrays)
    with pytest.raises(InputError) as raised:
        run_recbole_mma4ctr("MMa4CTR", "byo", None, byo_settings(tmp_path, epochs=1))
    assert one_line(raised) == f"{folder / 'byo.mm.npz'}, field 'item_id': {message}" + (
        "" if kept < 1 else "; min_item_feature_coverage is 0.5") + " (are the ids the .inter's item_id tokens?)"


def test_the_coverage_threshold_is_a_setting(tmp_path):
    # 60 of the 200 interacted items keep their vectors: 30 % coverage, accepted at a threshold of 0.25
    # and at exactly 0.3, refused just above; the 140 items without vectors are zeros
    folder = write_byo(tmp_path / "data")
    with np.load(folder / "byo.mm.npz") as archive:
        arrays = {name: archive[name][:60] for name in archive.files}
    np.savez(folder / "byo.mm.npz", **arrays)

    def dataset(threshold):
        return create_dataset(build_config("MMa4CTR", "byo", None, byo_settings(tmp_path, min_item_feature_coverage=threshold)))

    for threshold in (0.25, 0.3):
        built = dataset(threshold)
        assert built.items_without_features == 140
        row_of = built.field2token_id["item_id"]
        for name, matrix in built.modality_matrices.items():
            np.testing.assert_array_equal(matrix[[row_of[f"i{i}"] for i in range(60)]], arrays[name])
            assert not matrix[[row_of[f"i{i}"] for i in range(60, 200)]].any()
    with pytest.raises(InputError) as raised:
        dataset(0.31)
    assert one_line(raised) == (f"{folder / 'byo.mm.npz'}, field 'item_id': only 60 of the 200 items in the interactions "
                                "(30%) have vectors; min_item_feature_coverage is 0.31 (are the ids the .inter's "
                                "item_id tokens?)")


# ------------------------------------------------------------------ issue 19: time order, ranges, messages

def write_unix_time_inter(folder: Path, rows: int = 3000, seed: int = 5) -> np.ndarray:
    """A .inter with unix-second stamps one second apart (1.6e9 + k), written out of time order;
    each row's item is named by its exact stamp. Returns the stamps in file order."""
    rng = np.random.default_rng(seed)
    stamps = 1_600_000_000 + rng.permutation(rows)
    folder.mkdir(parents=True)
    pd.DataFrame({"user_id:token": rng.integers(0, 50, size=rows).astype(str),
                  "item_id:token": stamps.astype(str), "timestamp:float": stamps.astype(float),
                  "label:float": (np.arange(rows) % 3 == 0).astype(float)}).to_csv(folder / "ux.inter", sep="\t", index=False)
    return stamps


def split_stamps(tmp_path, recbole_own: bool = False):
    """The exact stamps of the train, valid and test rows as BPR's dataset splits ``ux``: read by
    the project (``utils.create_dataset``) or, with ``recbole_own``, by RecBole itself."""
    from recbole.data import create_dataset as recbole_create_dataset

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset

    config = build_config("BPR", "ux", None, run_settings(tmp_path, data_path=tmp_path / "data"))
    dataset = (recbole_create_dataset if recbole_own else create_dataset)(config)
    tokens = dataset.field2id_token["item_id"]
    return [np.array([int(tokens[i]) for i in part.inter_feat["item_id"].numpy()]) for part in dataset.build()]


def test_unix_time_stamps_out_of_file_order_split_in_exact_time_order(tmp_path, caplog):
    # before: float32 rounds 1.6e9 + k to steps of 128 s and ties keep file order: test rows from
    # the validation period (the defect's 30 of 300)
    stamps = write_unix_time_inter(tmp_path / "data" / "ux")
    train, valid, test = split_stamps(tmp_path, recbole_own=True)
    assert len(test) == 300 and (test < valid.max()).sum() > 10, (test < valid.max()).sum()
    train, valid, test = split_stamps(tmp_path)
    assert (len(train), len(valid), len(test)) == (2400, 300, 300)
    assert (test < valid.max()).sum() == 0 and (valid < train.max()).sum() == 0
    assert sorted(test) == sorted(stamps)[-300:]
    assert f"{tmp_path / 'data' / 'ux' / 'ux.inter'}, field 'timestamp': float32 (RecBole's storage) would merge " \
           f"3,000 distinct timestamps into" in caplog.text


def test_stamps_float32_keeps_apart_are_left_as_they_are():
    from recbole_mma4ctr.compat import exact_time_order

    positions = np.arange(5000, dtype=np.float64)[::-1]
    assert np.array_equal(exact_time_order(positions, "x", "timestamp"), positions)
    wide = 1_600_000_000 + 256.0 * np.array([3, 1, 2, 1])   # apart in float32, with a tie
    assert np.array_equal(exact_time_order(wide, "x", "timestamp"), wide)
    close = 1_600_000_000 + np.array([3.0, 1.0, 2.0, 1.0])
    assert exact_time_order(close, "x", "timestamp").tolist() == [2.0, 0.0, 1.0, 0.0]  # ties kept


@pytest.mark.parametrize("value, shown", [(3e38, "3e+38"), (1e6, "1e+06"), (-0.5, "-0.5")])
def test_modality_values_outside_0_1_are_refused(tmp_path, value, shown):
    # before: 3e38 trained to constant scores (AUC 0.5000) with exit 0; 1e6 was accepted
    from recbole_mma4ctr.errors import InputError
    from recbole_mma4ctr.prepare.byo import check_modality_archive

    matrix = np.full((3, 2), 0.5)
    matrix[1, 1] = value
    path = write_archive(tmp_path, item_id=IDS, visual=matrix)
    with pytest.raises(InputError) as raised:
        check_modality_archive(path)
    assert one_line(raised) == (f"{path}, field 'visual', row 1 (item_id 'b'), column 1: value {shown} outside [0, 1] "
                                f"(1 of 6 values; range {min(value, 0.5):.6g} to {max(value, 0.5):.6g}); min-max "
                                f"scale each column to [0, 1] before saving, the model does not rescale "
                                f"(docs/byo_dataset.md)")
    ids, matrices = check_modality_archive(write_archive(tmp_path, item_id=IDS, visual=np.array([[0, 1.0]] * 3)))
    assert matrices["visual"].max() == 1.0   # the ends of the range are in it
