"""The WeChat converter: exact output, the paper's label, skipping, and clear errors on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recbole_mma4ctr.prepare.tokens import RawFormatError
from recbole_mma4ctr.prepare.wechat import ACTION_WEIGHTS, convert


def test_atomic_files_have_typed_headers_and_the_papers_label(tiny_raw, tiny_atomic):
    out, manifest = tiny_atomic
    inter = pd.read_csv(out / "wechat.inter", sep="\t")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float", "label:float", "device:float"]
    item = pd.read_csv(out / "wechat.item", sep="\t")
    assert list(item.columns) == ["item_id:token", "author_id:token", "duration:float"]
    raw = pd.read_csv(tiny_raw / "user_action.csv")
    # every raw row kept (no filter in this fixture), in chronological order: by day, then file order
    assert len(inter) == len(raw) == manifest["rows"]["inter"]
    raw = raw.iloc[np.argsort(raw["date_"].to_numpy(), kind="stable")].reset_index(drop=True)
    assert (inter["user_id:token"] == raw["userid"]).all() and (inter["item_id:token"] == raw["feedid"]).all()
    # label = weighted sum / 13 >= 0.5
    weighted = sum(w * raw[a] for a, w in ACTION_WEIGHTS.items()) / 13 >= 0.5
    np.testing.assert_array_equal(inter["label:float"].to_numpy(), weighted.astype(float).to_numpy())
    # the timestamp is the row's position, exact in RecBole's float32
    np.testing.assert_array_equal(inter["timestamp:float"].to_numpy(), np.arange(len(inter)))
    assert len(inter) < 2**24
    assert manifest["label_rate"] == pytest.approx(weighted.mean())


def test_modality_matrices_align_with_items_and_are_scaled(tiny_atomic):
    out, manifest = tiny_atomic
    item = pd.read_csv(out / "wechat.item", sep="\t")
    with np.load(out / "wechat.mm.npz") as archive:
        assert archive["item_id"].tolist() == item["item_id:token"].astype(str).tolist()
        for name in ("visual", "acoustic", "textual"):
            matrix = archive[name]
            assert matrix.shape == (len(item), manifest["modality_dims"][name])
            assert matrix.min() >= 0 and matrix.max() <= 1


def test_unchanged_inputs_skip_and_changed_settings_reconvert(tiny_raw, tmp_path):
    out = tmp_path / "out"
    first = convert(tiny_raw, out, {"min_user_actions": 0})
    stamp = os.stat(out / "wechat.inter").st_mtime_ns
    again = convert(tiny_raw, out, {"min_user_actions": 0})
    assert again["fingerprint"] == first["fingerprint"]
    assert os.stat(out / "wechat.inter").st_mtime_ns == stamp
    liked = convert(tiny_raw, out, {"min_user_actions": 0, "label": "like"})
    assert liked["fingerprint"] != first["fingerprint"]
    raw = pd.read_csv(tiny_raw / "user_action.csv")
    inter = pd.read_csv(out / "wechat.inter", sep="\t")
    chronological = raw.iloc[np.argsort(raw["date_"].to_numpy(), kind="stable")]
    np.testing.assert_array_equal(inter["label:float"].to_numpy(), chronological["like"].to_numpy())


def test_user_filter_drops_and_counts(tiny_raw, tmp_path):
    raw = pd.read_csv(tiny_raw / "user_action.csv")
    per_user = raw.groupby("userid").size()
    threshold = int(per_user.median())
    manifest = convert(tiny_raw, tmp_path / "out", {"min_user_actions": threshold})
    assert manifest["rows"]["users"] == int((per_user >= threshold).sum())
    assert manifest["dropped"]["user_below_min_actions"] == int(per_user[per_user < threshold].sum())


def broken_copy(tiny_raw, tmp_path, edit_actions=None, edit_feeds=None):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name, edit in (("user_action.csv", edit_actions), ("feed_info.csv", edit_feeds)):
        text = (tiny_raw / name).read_text()
        (folder / name).write_text(edit(text) if edit else text)
    return folder


def replace_cell(text, line_number, column, value):
    lines = text.split("\n")
    header = lines[0].split(",")
    cells = lines[line_number - 1].split(",")
    cells[header.index(column)] = value
    lines[line_number - 1] = ",".join(cells)
    return "\n".join(lines)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("favorite", "favourite", 1), r"user_action.csv, line 1: missing column\(s\) favorite"),
    (lambda t: replace_cell(t, 5, "date_", "day3"), r"user_action.csv, line 5, field 'date_': expected an integer"),
    (lambda t: replace_cell(t, 9, "like", "2"), r"user_action.csv, line 9, field 'like': expected 0 or 1"),
])
def test_bad_actions_name_file_line_and_field(tiny_raw, tmp_path, edit, message):
    folder = broken_copy(tiny_raw, tmp_path, edit_actions=edit)
    with pytest.raises(RawFormatError, match=message):
        convert(folder, tmp_path / "out", {"min_user_actions": 0})
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob("*.tmp")) if (tmp_path / "out").exists() else True


def test_bad_token_in_feed_info_names_line_and_field(tiny_raw, tmp_path):
    def edit(text):
        frame = pd.read_csv(pd.io.common.StringIO(text), dtype=str, keep_default_na=False)
        frame.loc[3, "description"] = "12 x7 9"
        return frame.to_csv(index=False)

    folder = broken_copy(tiny_raw, tmp_path, edit_feeds=edit)
    with pytest.raises(RawFormatError, match=r"feed_info.csv, line 5, field 'description': expected integer ids"):
        convert(folder, tmp_path / "out", {"min_user_actions": 0})


def test_a_failed_reconversion_leaves_the_previous_output_intact(tiny_raw, tmp_path):
    out = tmp_path / "out"
    convert(tiny_raw, out, {"min_user_actions": 0})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    folder = broken_copy(tiny_raw, tmp_path, edit_actions=lambda t: replace_cell(t, 3, "device", "?"))
    with pytest.raises(RawFormatError):
        convert(folder, out, {"min_user_actions": 0})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_exit_status_and_progress(tiny_raw, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "recbole_mma4ctr.prepare", "wechat", "--raw", str(tiny_raw),
                         "--out", str(tmp_path / "out"), "--min-user-actions", "0"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "building modalities" in ok.stderr
    assert json.loads(ok.stdout)["rows"]["inter"] == 30_000
    missing = subprocess.run([sys.executable, "-m", "recbole_mma4ctr.prepare", "wechat", "--raw", str(tmp_path / "none"),
                              "--out", str(tmp_path / "out2")], capture_output=True, text=True)
    assert missing.returncode == 1
    assert "user_action.csv: file not found" in missing.stderr


def test_oracle_sidecar_aligns_with_the_kept_rows(tiny_raw, tmp_path):
    raw = pd.read_csv(tiny_raw / "user_action.csv")
    oracle = pd.read_csv(tiny_raw / "oracle_prob.csv")
    threshold = int(raw.groupby("userid").size().median())
    out = tmp_path / "out"
    manifest = convert(tiny_raw, out, {"min_user_actions": threshold})
    assert "wechat.oracle.npy" in manifest["files"]
    kept = (raw.groupby("userid")["userid"].transform("size") >= threshold).to_numpy()
    chronological = np.flatnonzero(kept)[np.argsort(raw["date_"].to_numpy()[kept], kind="stable")]
    sidecar = np.load(out / "wechat.oracle.npy")
    np.testing.assert_allclose(sidecar, oracle["p_weighted"].to_numpy()[chronological], rtol=1e-6)
    inter = pd.read_csv(out / "wechat.inter", sep="\t")
    assert len(sidecar) == len(inter)
