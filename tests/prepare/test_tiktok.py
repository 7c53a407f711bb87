"""TikTok track 1: the generator's raw formats, the streaming converter, its errors, the wiring, one run."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_settings
from recbole_mma4ctr.prepare.synthetic import tiktok as st
from recbole_mma4ctr.prepare import tiktok
from recbole_mma4ctr.errors import RawFormatError

TRAIN = "final_track1_train.txt"
VIDEO = [f"track1_video_features_part{i}.txt" for i in range(1, 12)]
AUDIO = [f"track1_audio_features_part{i}.txt" for i in range(1, 5)]
TITLE = "track1_title.txt"
RAW_FILES = {TRAIN, TITLE, "oracle_prob.csv", "SYNTHETIC.json", *VIDEO, *AUDIO}
COLUMNS = ["uid", "user_city", "item_id", "author_id", "item_city", "channel", "finish", "like", "music_id", "device",
           "time", "duration_time"]
SETTINGS = {"min_user_interactions": 50}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiktok") / "raw"
    summary = st.write_tiktok_raw(out, scale="tiny", seed=3)
    return out, summary


@pytest.fixture(scope="module")
def train(raw):
    return pd.read_csv(raw[0] / TRAIN, sep="\t", header=None, names=COLUMNS)


@pytest.fixture(scope="module")
def atomic(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiktok") / "atomic"
    return out, tiktok.convert(raw[0], out, SETTINGS)


def json_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def auc(score, label):
    """Mann-Whitney AUC with ties counted half, written independently of the package."""
    label = np.asarray(label).astype(bool)
    ranks = pd.Series(np.asarray(score, dtype=float)).rank(method="average").to_numpy()
    n_pos, n_neg = label.sum(), (~label).sum()
    return (ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def kept_rows(train, minimum=50):
    """The rows a user filter at ``minimum`` keeps, in chronological order (time, then file order)."""
    kept = train[train.groupby("uid")["uid"].transform("size") >= minimum]
    return kept.iloc[np.argsort(kept["time"].to_numpy(), kind="stable")]


# ------------------------------------------------------------------------------ generator


def test_raw_files_have_the_real_layout(raw, train):
    out, summary = raw
    assert {p.name for p in out.iterdir()} == RAW_FILES
    first = (out / TRAIN).read_text().split("\n", 1)[0]
    assert re.fullmatch(r"-?\d+(\t-?\d+){11}", first)  # no header, 12 tab-separated integers
    assert all(pd.api.types.is_integer_dtype(t) for t in train.dtypes)
    assert len(train) == summary["counts"]["train_rows"] == 29_700
    assert set(train["finish"]) == set(train["like"]) == {0, 1}
    assert train.groupby("item_id")["duration_time"].nunique().max() == 1  # an item attribute
    assert not train["time"].is_monotonic_increasing  # time-sorted runs, users interleaved
    ids = {}
    for files, key in ((VIDEO, "video_feature_dim_128"), (AUDIO, "audio_feature_128_dim")):
        records = [r for name in files for r in json_lines(out / name)]
        assert all(list(r) == ["item_id", key] for r in records)
        lengths = np.array([len(r[key]) for r in records])
        assert lengths.max() == 128 and 0 < (lengths < 128).sum() < 0.02 * len(records)  # a few short lines
        ids[key] = {r["item_id"] for r in records}
        assert len(ids[key]) == len(records)
    titles = json_lines(out / TITLE)
    assert all(list(r) == ["item_id", "title_features"] for r in titles)
    assert all(re.fullmatch(r"\d+", w) and isinstance(c, int) and c >= 1 for r in titles
               for w, c in r["title_features"].items())
    ids["title"] = {r["item_id"] for r in titles}
    every = set().union(*ids.values())
    shares = {key: 1 - len(found) / len(every) for key, found in ids.items()}
    assert shares == pytest.approx({"video_feature_dim_128": 0.05, "audio_feature_128_dim": 0.08, "title": 0.03},
                                   abs=0.02)
    shown = set(train["item_id"])
    assert every - shown and shown - ids["video_feature_dim_128"]  # features of unseen items; seen items without
    oracle = pd.read_csv(out / "oracle_prob.csv")
    assert list(oracle.columns) == ["p_finish", "p_like"] and len(oracle) == len(train)
    assert oracle.to_numpy().min() > 0 and oracle.to_numpy().max() < 1


def test_rates_and_oracle_are_realistic_and_recorded(raw, train):
    out, summary = raw
    record = json.loads((out / "SYNTHETIC.json").read_text())
    assert record["synthetic"] is True and record["scale"] == "tiny" and record["seed"] == 3
    assert record["version"] == st.GENERATOR_VERSION and record["params"]["n_heavy_users"] == 170
    assert {k: summary[k] for k in record} == record
    negatives = {name: (1 - train[name].mean()) / train[name].mean() for name in ("finish", "like")}
    assert negatives == pytest.approx({"finish": 2.53, "like": 61.3}, rel=0.25)
    oracle = pd.read_csv(out / "oracle_prob.csv")
    for name in ("finish", "like"):
        assert record["oracle_auc"][name] == pytest.approx(auc(oracle[f"p_{name}"], train[name]), abs=1e-6)
    assert 0.78 <= record["oracle_auc"]["like"] <= 0.9
    per_user = train.groupby("uid").size()
    assert (per_user >= 50).sum() == 170 and per_user[per_user >= 50].sum() == 29_000


def test_same_seed_same_bytes_other_seed_differs(raw, tmp_path):
    out, _ = raw
    st.write_tiktok_raw(tmp_path / "again", scale="tiny", seed=3)
    for name in RAW_FILES:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    st.write_tiktok_raw(tmp_path / "other", scale="tiny", seed=4, n_heavy_users=20, heavy_rows=2_000,
                        n_light_users=5, light_rows=100, n_items=300)
    assert (tmp_path / "other" / TRAIN).read_bytes() != (out / TRAIN).read_bytes()
    assert not list((tmp_path / "other").glob("*.tmp"))


def test_unknown_override_or_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'n_userz'"):
        st.write_tiktok_raw(tmp_path, scale="tiny", n_userz=3)
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        st.make_params("huge")
    full = st.make_params("full")
    assert full.n_heavy_users == 1_678 and full.heavy_min_rows == 4_000 and full.heavy_rows == 8_622_897
    assert full.n_light_users > 0 and full.chunk_rows < full.heavy_rows


# ------------------------------------------------------------------------------ converter


def test_atomic_files_headers_rows_and_label(raw, train, atomic):
    out, manifest = atomic
    inter = pd.read_csv(out / "tiktok.inter", sep="\t")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float", "label:float", "device:float"]
    item = pd.read_csv(out / "tiktok.item", sep="\t")
    assert list(item.columns) == ["item_id:token", "author_id:token", "duration:float"]
    kept = kept_rows(train)
    np.testing.assert_array_equal(inter["user_id:token"], kept["uid"])
    np.testing.assert_array_equal(inter["item_id:token"], kept["item_id"])
    np.testing.assert_array_equal(inter["label:float"], kept["like"])
    np.testing.assert_array_equal(inter["device:float"], kept["device"])
    np.testing.assert_array_equal(inter["timestamp:float"], np.arange(len(kept)))
    assert kept["time"].duplicated().any()  # ties exist, and were broken by file order
    assert sorted(item["item_id:token"]) == item["item_id:token"].tolist() == sorted(set(kept["item_id"]))
    first = kept.drop_duplicates("item_id").set_index("item_id")
    np.testing.assert_array_equal(item["duration:float"], first.loc[item["item_id:token"], "duration_time"])
    per_user = train.groupby("uid").size()
    assert manifest["rows"] == {"raw_interactions": len(train), "inter": len(kept), "items": len(item),
                                "users": int((per_user >= 50).sum()), "raw_users": len(per_user)}
    assert manifest["dropped"] == {"user_below_min_interactions": int(per_user[per_user < 50].sum())}
    assert manifest["label"] == "like" and manifest["label_rate"] == pytest.approx(kept["like"].mean())
    assert manifest["action_rates"] == pytest.approx({"like": train["like"].mean(), "finish": train["finish"].mean()})
    assert manifest["synthetic"] is True and manifest["settings"]["min_user_interactions"] == 50


def test_modalities_aligned_scaled_and_missing_items_counted(raw, atomic):
    out, manifest = atomic
    item_ids = pd.read_csv(out / "tiktok.item", sep="\t")["item_id:token"]
    with np.load(out / "tiktok.mm.npz") as archive:
        assert archive["item_id"].tolist() == item_ids.astype(str).tolist()
        for name in ("visual", "acoustic", "textual"):
            matrix = archive[name]
            assert matrix.dtype == np.float32 and matrix.shape == (len(item_ids), manifest["modality_dims"][name])
            assert matrix.min() == 0 and matrix.max() == 1
    assert manifest["modality_dims"]["acoustic"] == 10
    covered = {"visual": VIDEO, "acoustic": AUDIO, "textual": [TITLE]}
    for name, files in covered.items():
        ids = {r["item_id"] for f in files for r in json_lines(raw[0] / f)}
        assert manifest["items_without"][name] == int((~item_ids.isin(ids)).sum()) > 0
    assert manifest["feature_files"]["visual"]["short_vectors_padded"] > 0
    assert "covariance_eigh" in manifest["modality_methods"]["textual"]


def test_fixed_dims_finish_label_and_oracle_sidecar(raw, train, tmp_path):
    out = tmp_path / "out"
    manifest = tiktok.convert(raw[0], out, {**SETTINGS, "label_action": "finish", "visual_dim": 71, "acoustic_dim": 10,
                                            "textual_dim": 22})
    assert manifest["modality_dims"] == {"visual": 71, "acoustic": 10, "textual": 22}
    kept = kept_rows(train)
    inter = pd.read_csv(out / "tiktok.inter", sep="\t")
    np.testing.assert_array_equal(inter["label:float"], kept["finish"])
    assert "tiktok.oracle.npy" in manifest["files"]
    oracle = pd.read_csv(raw[0] / "oracle_prob.csv")
    sidecar = np.load(out / "tiktok.oracle.npy")
    assert sidecar.dtype == np.float32 and len(sidecar) == len(inter)
    np.testing.assert_allclose(sidecar, oracle.loc[kept.index, "p_finish"], rtol=1e-6)


def test_wider_words_use_arpack_with_the_same_width(raw, atomic, tmp_path, monkeypatch):
    monkeypatch.setattr(tiktok, "COVARIANCE_MAX_WORDS", 10)
    manifest = tiktok.convert(raw[0], tmp_path / "out", {**SETTINGS, "visual_dim": 5})
    assert "ARPACK" in manifest["modality_methods"]["textual"]
    assert manifest["modality_dims"]["textual"] == atomic[1]["modality_dims"]["textual"]


def test_a_tiny_chunk_size_gives_the_same_output(raw, atomic, tmp_path):
    out, manifest = atomic
    small = tiktok.convert(raw[0], tmp_path / "small", {**SETTINGS, "chunk_rows": 997})
    assert small["fingerprint"] == manifest["fingerprint"]  # chunk_rows does not change the result
    for name in ("tiktok.inter", "tiktok.item", "tiktok.oracle.npy"):
        assert (tmp_path / "small" / name).read_bytes() == (out / name).read_bytes(), name
    with np.load(out / "tiktok.mm.npz") as big_npz, np.load(tmp_path / "small" / "tiktok.mm.npz") as small_npz:
        for name in big_npz.files:
            np.testing.assert_array_equal(big_npz[name], small_npz[name])


def test_unchanged_inputs_skip_and_changed_settings_reconvert(raw, tmp_path):
    out = tmp_path / "out"
    first = tiktok.convert(raw[0], out, SETTINGS)
    stamp = os.stat(out / "tiktok.inter").st_mtime_ns
    assert tiktok.convert(raw[0], out, SETTINGS)["fingerprint"] == first["fingerprint"]
    assert os.stat(out / "tiktok.inter").st_mtime_ns == stamp
    assert tiktok.convert(raw[0], out, {**SETTINGS, "min_user_interactions": 100})["fingerprint"] != first["fingerprint"]
    assert os.stat(out / "tiktok.inter").st_mtime_ns != stamp


def broken_copy(raw_dir, tmp_path, name, edit):
    """A raw folder whose file ``name`` is edited (``edit(text) -> text or bytes``, or None: deleted)."""
    folder = tmp_path / "broken"
    folder.mkdir()
    for path in raw_dir.iterdir():
        if path.name != name:
            os.symlink(path, folder / path.name)
    if edit is not None:
        edited = edit((raw_dir / name).read_text())
        if isinstance(edited, bytes):
            (folder / name).write_bytes(edited)
        else:
            (folder / name).write_text(edited)
    return folder


def latin1(edit):
    """The edit, then the whole file saved as Latin-1 (only the edited text is not ASCII)."""
    return lambda text: edit(text).encode("latin-1")


def edit_line(number, change):
    def edit(text):
        lines = text.split("\n")
        lines[number - 1] = change(lines[number - 1])
        return "\n".join(lines)
    return edit


def set_cell(column, value):
    def change(line):
        cells = line.split("\t")
        cells[COLUMNS.index(column)] = value
        return "\t".join(cells)
    return change


def set_vector(key, change):
    def edit(line):
        record = json.loads(line)
        record[key] = change(record[key])
        return json.dumps(record, allow_nan=True)
    return edit


def duplicate_into(source_line):
    def edit(text):
        return text + source_line + "\n"
    return edit


BAD_INPUTS = [
    (TRAIN, edit_line(5, lambda line: line + "\t7"), r"final_track1_train.txt, line 5: expected 12 tab-separated columns, found 13"),
    (TRAIN, edit_line(6, lambda line: line.rsplit("\t", 1)[0]), r"final_track1_train.txt, line 6: expected 12 tab-separated columns, found 11"),
    (TRAIN, edit_line(7, set_cell("time", "12:00")), r"final_track1_train.txt, line 7, field 'time': expected an integer"),
    (TRAIN, edit_line(3000, set_cell("uid", "u17")), r"final_track1_train.txt, line 3000, field 'uid': expected an integer"),
    (TRAIN, edit_line(9, set_cell("like", "2")), r"final_track1_train.txt, line 9, field 'like': expected 0 or 1"),
    (VIDEO[1], edit_line(3, lambda line: line[:-7]), r"track1_video_features_part2.txt, line 3: malformed JSON"),
    (VIDEO[2], edit_line(4, set_vector("video_feature_dim_128", lambda v: v + [0.5])),
     r"track1_video_features_part3.txt, line 4, field 'video_feature_dim_128': expected at most 128 values, found 129"),
    (VIDEO[0], edit_line(2, set_vector("video_feature_dim_128", lambda v: v[:5] + [float("nan")] + v[6:])),
     r"track1_video_features_part1.txt, line 2, field 'video_feature_dim_128': value 5 is not a finite number"),
    (AUDIO[3], edit_line(1, set_vector("audio_feature_128_dim", lambda v: [float("inf")] + v[1:])),
     r"track1_audio_features_part4.txt, line 1, field 'audio_feature_128_dim': value 0 is not a finite number"),
    (AUDIO[1], edit_line(2, lambda line: json.dumps({**json.loads(line), "item_id": "x17"})),
     r"track1_audio_features_part2.txt, line 2, field 'item_id': expected an integer item id"),
    (TITLE, edit_line(8, set_vector("title_features", lambda t: {**t, "w12": 1})),
     r"track1_title.txt, line 8, field 'title_features': expected integer word ids"),
    (AUDIO[2], None, r"track1_audio_features_part3.txt: file not found"),
    (TRAIN, latin1(edit_line(8, set_cell("device", "1é"))),
     r"final_track1_train.txt, line 8, field 'device': not valid UTF-8 text \(byte 0xe9"),
    (TITLE, latin1(edit_line(4, lambda line: '{"source": "café", ' + line[1:])),
     r"track1_title.txt, line 4: not valid UTF-8 text"),
]


@pytest.mark.parametrize("name, edit, message", BAD_INPUTS, ids=[m.split(":")[0][:60] for _, _, m in BAD_INPUTS])
def test_bad_input_names_file_line_and_field_and_keeps_the_old_output(raw, tmp_path, name, edit, message):
    out = tmp_path / "out"
    tiktok.convert(raw[0], out, SETTINGS)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    folder = broken_copy(raw[0], tmp_path, name, edit)
    with pytest.raises((RawFormatError, FileNotFoundError), match=message):
        tiktok.convert(folder, out, SETTINGS)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-written, no temporaries


def test_duplicate_item_id_across_parts_names_both_places(raw, tmp_path):
    first_line = (raw[0] / VIDEO[0]).read_text().split("\n", 1)[0]
    n_lines = len((raw[0] / VIDEO[4]).read_text().splitlines())
    folder = broken_copy(raw[0], tmp_path, VIDEO[4], duplicate_into(first_line))
    with pytest.raises(RawFormatError, match=rf"track1_video_features_part5.txt, line {n_lines + 1}, field 'item_id': "
                                             rf"duplicate item id, first seen in track1_video_features_part1.txt line 1"):
        tiktok.convert(folder, tmp_path / "out", SETTINGS)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_oracle_with_other_row_count_is_refused(raw, tmp_path):
    folder = broken_copy(raw[0], tmp_path, "oracle_prob.csv", lambda text: text.rsplit("\n", 2)[0] + "\n")
    with pytest.raises(RawFormatError, match="oracle_prob.csv: fewer rows"):
        tiktok.convert(folder, tmp_path / "out", SETTINGS)


def test_cli_exit_status(raw, tmp_path):
    def prepare(*args):
        return subprocess.run([sys.executable, "-m", "recbole_mma4ctr.prepare", *map(str, args)], capture_output=True,
                              text=True, timeout=300)

    ok = prepare("tiktok", "--raw", raw[0], "--out", tmp_path / "out", "--min_user_interactions", 50,
                 "--visual_dim", 71, "--textual_dim", 22, "--chunk_rows", 5000)
    assert ok.returncode == 0, ok.stderr
    assert "pass 1" in ok.stderr and "pass 2" in ok.stderr
    assert json.loads(ok.stdout)["modality_dims"] == {"visual": 71, "acoustic": 10, "textual": 22}
    missing = prepare("tiktok", "--raw", tmp_path / "none", "--out", tmp_path / "out2")
    assert missing.returncode == 1 and "final_track1_train.txt: file not found" in missing.stderr
    nobody = prepare("tiktok", "--raw", raw[0], "--out", tmp_path / "out3", "--min_user_interactions", 4000)
    assert nobody.returncode == 1 and "no user has >= 4,000 rows" in nobody.stderr  # the paper's 4000, tiny sample
    assert prepare("tiktok", "--raw", raw[0], "--out", tmp_path / "out4", "--label_action", "comment").returncode == 2
    synth = prepare("synth", "tiktok", "--scale", "tiny", "--seed", 3, "--out", tmp_path / "synth")
    assert synth.returncode == 0, synth.stderr
    assert (tmp_path / "synth" / TRAIN).read_bytes() == (raw[0] / TRAIN).read_bytes()


# ------------------------------------------------------------------------------ wiring


def test_sources_find_the_papers_tree_else_generate_a_sample(raw, tmp_path):
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.prepare.sources import CONVERTERS, converter_settings, raw_source

    assert CONVERTERS["tiktok"] is tiktok
    sample = raw_source("tiktok", tmp_path / "dataset", tmp_path / "synthetic", "tiny", 3)
    assert sample == tmp_path / "synthetic" / "tiktok"
    assert (sample / TRAIN).read_bytes() == (raw[0] / TRAIN).read_bytes()
    stamp = os.stat(sample / TRAIN).st_mtime_ns
    assert raw_source("tiktok", tmp_path / "dataset", tmp_path / "synthetic", "tiny", 3) == sample
    assert os.stat(sample / TRAIN).st_mtime_ns == stamp  # reused
    raw_source("tiktok", tmp_path / "dataset", tmp_path / "synthetic", "tiny", 4)
    assert json.loads((sample / "SYNTHETIC.json").read_text())["seed"] == 4  # regenerated
    real = tmp_path / "dataset" / "TikTok2019ICME" / "track1"
    shutil.copytree(raw[0], real)
    assert raw_source("tiktok", tmp_path / "dataset", tmp_path / "synthetic", "tiny", 4) == real

    config = build_config("MMa4CTR", "tiktok", overrides={"visual_dim": "71", "label_action": "finish"})
    assert converter_settings(config) == {"label_action": "finish", "min_user_interactions": None, "pca_variance": 0.9,
                                          "visual_dim": 71, "acoustic_dim": 10, "textual_dim": None,
                                          "chunk_rows": 1_000_000, "converter_seed": 2024, "item_float_seq": False,
                                          "action_labels": False}
    assert converter_settings(build_config("MMa4CTR", "tiktok", overrides={"min_user_interactions": "7"}))[
        "min_user_interactions"] == 7
    wechat = converter_settings(build_config("MMa4CTR", "wechat"))
    assert wechat == {"label_action": "weighted", "min_user_actions": 100, "pca_variance": 0.9, "token_maxlen": 512,
                      "text_recipe": "paper", "text_max_dim": 128, "visual_dim": None, "acoustic_dim": None,
                      "textual_dim": None, "embedding_dim": None, "feed_embedding": False, "converter_seed": 2024,
                      "dedupe": "none", "row_order": "chronological", "device_choice": "row",
                      "item_float_seq": False, "action_labels": False}


def test_user_filter_follows_the_source_unless_set(raw, tmp_path):
    generated = raw[0]
    assert tiktok.user_filter(generated, None) == (50, "the generated sample's heavy-user threshold")
    assert tiktok.user_filter(generated, 120) == (120, "as set")
    real = tmp_path / "real"  # the same files without SYNTHETIC.json: the layout real data comes in
    real.mkdir()
    for path in generated.iterdir():
        if path.name != "SYNTHETIC.json":
            os.symlink(path, real / path.name)
    assert tiktok.user_filter(real, None) == (4000, "the paper's, for real files")
    manifest = tiktok.convert(generated, tmp_path / "out", {"min_user_interactions": None})
    assert manifest["settings"]["min_user_interactions"] == 50
    assert manifest["user_filter"] == "the generated sample's heavy-user threshold"
    with pytest.raises(ValueError, match="no user has >= 4,000 rows"):  # the tiny sample has no such user
        tiktok.convert(real, tmp_path / "out_real", {"min_user_interactions": None})


# The paper's acoustic modality has 10 dims (PCA to 10): its profile is widened to L = 21 values
# by adaptive average pooling (profiles.average_pool).
def test_run_on_the_sample_with_the_papers_widths(tmp_path):
    """The paper-width TikTok run of docs/data.md on the generated sample: 71/10/22 dims -> 169 inputs, 26,025 parameters."""
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    settings = run_settings(tmp_path, data_path=tmp_path / "dataset_atomic", raw_root=tmp_path / "dataset",
                            synthetic_root=tmp_path / "dataset" / "synthetic", epochs=3, visual_dim=71,
                            textual_dim=22)
    record = run_recbole_mma4ctr("MMa4CTR", "tiktok", None, settings)
    assert record["trainable_parameters"] == 26_025
    assert record["features"]["input_dims"] == {"profile_visual": 22, "profile_acoustic": 22, "profile_textual": 22,
                                                "item_mm": 103}
    assert record["data"]["synthetic"] is True and record["data"]["label"] == "like"
    assert record["data"]["modality_dims"] == {"visual": 71, "acoustic": 10, "textual": 22}
    synthetic = json.loads((tmp_path / "dataset" / "synthetic" / "tiktok" / "SYNTHETIC.json").read_text())
    # 3 epochs only (about 0.66 here; 10 epochs, the default, reach about 0.75): well above chance, below the oracle
    assert 0.6 <= record["test"]["auc"] < synthetic["oracle_auc"]["like"]
