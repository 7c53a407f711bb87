"""The WeChat converter: exact output, the paper's label, skipping, and clear errors on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import MinMaxScaler

from recbole_mma4ctr.errors import RawFormatError
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


def test_the_visual_matrix_is_the_authors_recipe_recomputed_with_scikit_learn(tiny_raw, tiny_atomic):
    # visual = min-max(PCA keeping pca_variance of the variance) of each feed's ocr ids (ocr_char where
    # ocr is empty), zero-padded at the end to the longest list; fitted on every feed of feed_info.csv
    out, manifest = tiny_atomic
    feeds = pd.read_csv(tiny_raw / "feed_info.csv", dtype=str)
    ids = [[int(t) for t in str(ocr if isinstance(ocr, str) and ocr.strip() else char or "").split()]
           for ocr, char in zip(feeds["ocr"], feeds["ocr_char"].fillna(""))]
    width = min(max(len(row) for row in ids), manifest["settings"]["token_maxlen"])
    padded = np.zeros((len(ids), width))
    for row, tokens in enumerate(ids):
        padded[row, :len(tokens[:width])] = tokens[:width]
    pca = PCA(n_components=manifest["settings"]["pca_variance"], svd_solver="full")
    expected = MinMaxScaler().fit_transform(pca.fit_transform(padded))
    row_of = {feed: row for row, feed in enumerate(feeds["feedid"])}
    with np.load(out / "wechat.mm.npz") as archive:
        rows = [row_of[feed] for feed in archive["item_id"]]
        visual = archive["visual"]
    assert visual.shape == (len(rows), pca.n_components_) == (len(rows), manifest["modality_dims"]["visual"])
    np.testing.assert_allclose(visual, expected[rows], rtol=0, atol=1e-5)


def test_unchanged_inputs_skip_and_changed_settings_reconvert(tiny_raw, tmp_path):
    out = tmp_path / "out"
    first = convert(tiny_raw, out, {"min_user_actions": 0})
    stamp = os.stat(out / "wechat.inter").st_mtime_ns
    again = convert(tiny_raw, out, {"min_user_actions": 0})
    assert again["fingerprint"] == first["fingerprint"]
    assert os.stat(out / "wechat.inter").st_mtime_ns == stamp
    liked = convert(tiny_raw, out, {"min_user_actions": 0, "label_action": "like"})
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


@pytest.mark.parametrize("which, edit, message", [
    ("actions", lambda t: t.replace("favorite", "favourite", 1), r"user_action.csv, line 1: missing column\(s\) favorite"),
    ("actions", lambda t: replace_cell(t, 5, "date_", "day3"), r"user_action.csv, line 5, field 'date_': expected an integer"),
    ("actions", lambda t: replace_cell(t, 9, "like", "2"), r"user_action.csv, line 9, field 'like': expected 0 or 1"),
    ("actions", lambda t: replace_cell(t, 11, "userid", ""),
     r"user_action.csv, line 11, field 'userid': expected an integer \(value ''\)"),
    ("feeds", lambda t: "\n".join(line + ",x" if number == 6 else line for number, line in enumerate(t.split("\n"), 1)),
     r"feed_info.csv, line 6: expected 15 comma-separated fields, found 16"),
    ("feeds", lambda t: "\n".join(line.rsplit(",", 1)[0] if number == 7 else line
                                  for number, line in enumerate(t.split("\n"), 1)),
     r"feed_info.csv, line 7: expected 15 comma-separated fields, found 14"),
    ("actions", lambda t: "\n".join(line + ",9" if number == 12 else line for number, line in enumerate(t.split("\n"), 1)),
     r"user_action.csv, line 12: expected \d+ comma-separated fields, found \d+"),
    ("actions", lambda t: replace_cell(t, 13, "like", "1.5"), r"user_action.csv, line 13, field 'like': expected an integer"),
    ("actions", lambda t: replace_cell(t, 14, "userid", "inf"), r"user_action.csv, line 14, field 'userid': expected an integer"),
    ("actions", lambda t: t.split("\n", 1)[0] + "\n", r"user_action.csv: no rows below the header"),
    ("feeds", lambda t: t.split("\n", 1)[0] + "\n", r"feed_info.csv: no rows below the header"),
    ("feeds", lambda t: replace_cell(t, 5, "videoplayseconds", "1e400"),
     r"feed_info.csv, line 5, field 'videoplayseconds': expected a finite number"),
    ("feeds", lambda t: duplicate_feed(t), r"feed_info.csv, line 9, field 'feedid': duplicate feed id"),
    ("feeds", lambda t: replace_cell(t, 4, "feedid", "f12"), r"feed_info.csv, line 4, field 'feedid': expected an integer feed id"),
    ("feeds", lambda t: replace_cell(t, 6, "bgm_song_id", "12.5"),
     r"feed_info.csv, line 6, field 'bgm_song_id': expected an integer id"),
    ("feeds", lambda t: replace_cell(t, 3, "videoplayseconds", "nan"),
     r"feed_info.csv, line 3, field 'videoplayseconds': expected a finite number \(value 'nan'\)"),
    ("feeds", lambda t: replace_cell(t, 8, "machine_tag_list", "12 0.5;13 high"), r"feed_info.csv, line 8, field 'machine_tag_list'"),
])
def test_bad_raw_files_name_file_line_and_field(tiny_raw, tmp_path, which, edit, message):
    folder = broken_copy(tiny_raw, tmp_path, **{f"edit_{which}": edit})
    with pytest.raises(RawFormatError, match=message):
        convert(folder, tmp_path / "out", {"min_user_actions": 0})
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob("*.tmp")) if (tmp_path / "out").exists() else True


def test_blank_lines_and_spaced_or_quoted_headers(tiny_raw, tiny_atomic, tmp_path):
    """Readers skip blank lines, so errors count them to name the real line; header names may be
    quoted or followed by spaces."""
    def blank_then_bad(text):
        lines = text.split("\n")
        lines.insert(3, "")  # a blank line 4: what was line 9 is now line 10
        return replace_cell("\n".join(lines), 10, "like", "2")

    folder = broken_copy(tiny_raw, tmp_path, edit_actions=blank_then_bad)
    with pytest.raises(RawFormatError, match=r"user_action.csv, line 10, field 'like': expected 0 or 1"):
        convert(folder, tmp_path / "out", {"min_user_actions": 0})

    def spaced_and_quoted(text):
        head, body = text.split("\n", 1)
        return ", ".join(f'"{name}"' for name in head.split(",")) + "\n" + body

    folder = tmp_path / "headers"
    folder.mkdir()
    for name in ("user_action.csv", "feed_info.csv"):
        (folder / name).write_text(spaced_and_quoted((tiny_raw / name).read_text()))
    convert(folder, tmp_path / "out2", {"min_user_actions": 0})
    assert (tmp_path / "out2" / "wechat.inter").read_bytes() == (tiny_atomic[0] / "wechat.inter").read_bytes()


def duplicate_feed(text):
    lines = text.split("\n")
    cells = lines[8].split(",")
    cells[0] = lines[1].split(",")[0]
    lines[8] = ",".join(cells)
    return "\n".join(lines)


def test_bad_token_in_feed_info_names_line_and_field(tiny_raw, tmp_path):
    def edit(text):
        frame = pd.read_csv(pd.io.common.StringIO(text), dtype=str, keep_default_na=False)
        frame.loc[3, "description"] = "12 x7 9"
        return frame.to_csv(index=False)

    folder = broken_copy(tiny_raw, tmp_path, edit_feeds=edit)
    with pytest.raises(RawFormatError, match=r"feed_info.csv, line 5, field 'description': expected integer ids"):
        convert(folder, tmp_path / "out", {"min_user_actions": 0})


def bytes_copy(tiny_raw, tmp_path, name, edit):
    """A copy of the tiny raw folder whose file ``name`` is replaced by ``edit(text) -> bytes``."""
    folder = broken_copy(tiny_raw, tmp_path)
    (folder / name).write_bytes(edit((tiny_raw / name).read_text()))
    return folder


@pytest.mark.parametrize("name, edit, message", [
    ("feed_info.csv", lambda t: replace_cell(t, 5, "description", "12 café 7").encode("latin-1"),
     r"feed_info.csv, line 5, field 'description': not valid UTF-8 text \(byte 0xe9"),
    ("feed_info.csv", lambda t: replace_cell(t, 3, "authorid", "作者").encode("gbk"),
     r"feed_info.csv, line 3, field 'authorid': not valid UTF-8 text"),
    ("user_action.csv", lambda t: replace_cell(t, 7, "device", "1é").encode("latin-1"),
     r"user_action.csv, line 7, field 'device': not valid UTF-8 text"),
    ("user_action.csv", lambda t: t.encode("utf-16"), r"user_action.csv, line 1: the file is UTF-16 text"),
])
def test_text_in_another_encoding_is_named_by_line_and_field(tiny_raw, tmp_path, name, edit, message):
    folder = bytes_copy(tiny_raw, tmp_path, name, edit)
    with pytest.raises(RawFormatError, match=message):
        convert(folder, tmp_path / "out", {"min_user_actions": 0})
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_utf8_byte_order_mark_is_accepted(tiny_raw, tiny_atomic, tmp_path):
    folder = bytes_copy(tiny_raw, tmp_path, "user_action.csv", lambda t: t.encode("utf-8-sig"))
    (folder / "feed_info.csv").write_bytes((tiny_raw / "feed_info.csv").read_text().encode("utf-8-sig"))
    convert(folder, tmp_path / "out", {"min_user_actions": 0})
    for name in ("wechat.inter", "wechat.item"):
        assert (tmp_path / "out" / name).read_bytes() == (tiny_atomic[0] / name).read_bytes()


def test_empty_token_fields_are_read_as_no_tokens_and_counted(tiny_raw, tmp_path):
    def blank_visual(text):
        for line in range(2, 12):  # ten feeds lose both visual sources
            text = replace_cell(replace_cell(text, line, "ocr", ""), line, "ocr_char", "")
        return text

    folder = broken_copy(tiny_raw, tmp_path, edit_feeds=blank_visual)
    manifest = convert(folder, tmp_path / "out", {"min_user_actions": 0})
    feeds = pd.read_csv(folder / "feed_info.csv", dtype=str, keep_default_na=False)
    used = feeds["feedid"].astype(int).isin(pd.read_csv(folder / "user_action.csv")["feedid"])
    no_visual = used & (feeds["ocr"].str.strip() == "") & (feeds["ocr_char"].str.strip() == "")
    counts = manifest["empty_token_fields"]
    assert counts["items_without_visual_tokens"] == int(no_visual.sum()) >= 10
    assert counts["fields"]["ocr"] == int((used & (feeds["ocr"].str.strip() == "")).sum())
    with np.load(tmp_path / "out" / "wechat.mm.npz") as archive:
        ids = archive["item_id"].astype(int)
        visual = archive["visual"]
    blank = np.isin(ids, feeds["feedid"].astype(int)[no_visual])
    # no tokens = an all-zero padded row: after PCA and min-max every such item has the same vector
    assert blank.sum() >= 10 and np.ptp(visual[blank], axis=0).max() == 0


@pytest.mark.unit
def test_atomic_writer_refuses_a_value_that_would_break_recboles_reader(tmp_path):
    from recbole_mma4ctr.prepare.atomic import AtomicWriter

    with pytest.raises(ValueError, match=r"wechat.item: cannot write a value"):
        with AtomicWriter(tmp_path / "out") as writer:
            writer.write_table("wechat.item", {"item_id": np.array(["1", "2\t3"])}, {"item_id": "token"})
    assert list((tmp_path / "out").iterdir()) == []


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
                         "--out", str(tmp_path / "out"), "--min_user_actions", "0"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "building modalities" in ok.stderr
    assert json.loads(ok.stdout)["rows"]["inter"] == 30_000
    missing = subprocess.run([sys.executable, "-m", "recbole_mma4ctr.prepare", "wechat", "--raw", str(tmp_path / "none"),
                              "--out", str(tmp_path / "out2")], capture_output=True, text=True)
    assert missing.returncode == 1
    assert "user_action.csv: file not found" in missing.stderr


def test_cli_reaches_every_recipe_setting_and_shares_the_run_paths_fingerprint(tiny_raw, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "recbole_mma4ctr.prepare", "wechat", "--raw", str(tiny_raw),
                           "--out", str(out), "--min_user_actions", "0", "--text_recipe", "tfidf",
                           "--textual_dim", "7", "--feed_embedding", "true"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["text_recipe"] == "tfidf" and manifest["modality_dims"]["textual"] == 7
    assert "embedding" in manifest["modality_dims"]
    # the same settings given as the run path gives them (yaml keys) find the output up to date
    again = convert(tiny_raw, out, {"min_user_actions": 0, "text_recipe": "tfidf", "textual_dim": 7, "feed_embedding": True})
    assert again["fingerprint"] == manifest["fingerprint"] and again["seconds"] == manifest["seconds"]


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


# --- text recipe: paper (padded ids -> PCA) or tfidf (bag of tokens -> TF-IDF -> truncated SVD) ---

@pytest.mark.unit
def test_truncated_svd_honours_fixed_widths_and_the_fewest_components_for_a_share():
    from scipy import sparse

    from recbole_mma4ctr.prepare import text

    rng = np.random.default_rng(0)
    lists = [rng.integers(0, 300, size=rng.integers(0, 40)) for _ in range(200)]
    matrix = text.tfidf(lists)
    assert sparse.issparse(matrix) and matrix.shape[0] == 200
    for width in (1, 7, 60):
        assert text.truncated_svd(matrix, width).shape == (200, width)
    singular = np.linalg.svd(matrix.toarray(), compute_uv=False)
    energy = (singular ** 2).cumsum() / (singular ** 2).sum()
    for share in (0.3, 0.6, 0.9):
        fewest = int(np.searchsorted(energy, share * (1 - 1e-12))) + 1
        assert energy[fewest - 1] >= share * (1 - 1e-12) and (fewest == 1 or energy[fewest - 2] < share)
        assert text.truncated_svd(matrix, share, max_dim=1000).shape == (200, fewest)
    assert text.truncated_svd(matrix, 0.99, max_dim=20).shape == (200, 20)  # the cap
    # the projection is X V: same Gram matrix as the data's best rank-k approximation
    projected = text.truncated_svd(matrix, 5).astype(np.float64)
    np.testing.assert_allclose(np.linalg.svd(projected, compute_uv=False), singular[:5], rtol=1e-4)


@pytest.mark.unit
def test_randomized_truncated_svd_agrees_with_the_exact_one(monkeypatch):
    """Large matrices take the randomized (float32) path: its leading components match the exact ones."""
    from recbole_mma4ctr.prepare import text

    rng = np.random.default_rng(1)
    topics = rng.integers(0, 6, 400)
    lists = [np.concatenate([rng.integers(t * 50, t * 50 + 50, 12), rng.integers(0, 300, 4)]) for t in topics]
    matrix = text.tfidf(lists)
    exact = text.truncated_svd(matrix, 8).astype(np.float64)
    monkeypatch.setattr(text, "EXACT_SVD_SIDE", 50)  # force the randomized branch
    randomized = text.truncated_svd(matrix, 8).astype(np.float64)
    found, expected = np.linalg.svd(randomized, compute_uv=False), np.linalg.svd(exact, compute_uv=False)
    np.testing.assert_allclose(found[:6], expected[:6], rtol=1e-4)  # the six planted topics: exact
    np.testing.assert_allclose(found, expected, rtol=2e-2)  # the flat tail: approximately
    assert text.truncated_svd(matrix, 0.5, max_dim=40).shape[1] == text.fewest_components(
        np.linalg.svd(matrix.toarray(), compute_uv=False)[:40], float(matrix.multiply(matrix).sum()), 0.5)


def test_fixed_dims_under_both_recipes(tiny_raw, tmp_path):
    # the paper recipe's textual modality keeps its keyword and tag ids unreduced (5 + 8 columns
    # on this fixture), so its fixed width must leave the PCA at least one column
    for recipe, textual in (("paper", 20), ("tfidf", 5)):
        dims = {"visual_dim": 9, "acoustic_dim": 13, "textual_dim": textual}
        manifest = convert(tiny_raw, tmp_path / recipe, {"min_user_actions": 0, "text_recipe": recipe, **dims})
        assert manifest["modality_dims"] == {"visual": 9, "acoustic": 13, "textual": textual}
        with np.load(tmp_path / recipe / "wechat.mm.npz") as archive:
            assert archive["acoustic"].shape[1] == 13
    with pytest.raises(ValueError, match="textual_dim 5 leaves no column for the reduced part.*13 columns"):
        convert(tiny_raw, tmp_path / "narrow", {"min_user_actions": 0, "textual_dim": 5})


def topic_gap(matrix, topics):
    """Mean cosine similarity (columns centred) within a main topic minus across topics."""
    centred = matrix - matrix.mean(axis=0)
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit.T
    same = topics[:, None] == topics[None, :]
    return cosine[same & ~np.eye(len(topics), dtype=bool)].mean() - cosine[~same].mean()


def test_both_recipes_convert_and_tfidf_groups_feeds_by_topic(tiny_raw, tiny_atomic, tmp_path):
    from recbole_mma4ctr.prepare.synthetic.wechat import build_world, make_params

    paper_dir, paper = tiny_atomic
    tfidf = convert(tiny_raw, tmp_path / "tfidf", {"min_user_actions": 0, "text_recipe": "tfidf"})
    assert paper["text_recipe"] == "paper" and paper["item_recipe"].startswith("paper:")
    assert tfidf["text_recipe"] == "tfidf" and tfidf["item_recipe"].startswith("tfidf:")
    assert tfidf["settings"]["text_recipe"] == "tfidf" and tfidf["fingerprint"] != paper["fingerprint"]
    assert tfidf["rows"] == paper["rows"]
    assert all(1 <= dim <= 128 + 8 for dim in tfidf["modality_dims"].values())  # cap + bgm columns
    world = build_world(make_params("tiny"), 7)
    topic_of = dict(zip(world.feedid.astype(str).tolist(), world.feed_topic.tolist()))
    gaps = {}
    for recipe, folder in (("paper", paper_dir), ("tfidf", tmp_path / "tfidf")):
        with np.load(folder / "wechat.mm.npz") as archive:
            topics = np.array([topic_of[i] for i in archive["item_id"]])
            gaps[recipe] = {name: topic_gap(archive[name].astype(np.float64), topics)
                            for name in ("visual", "acoustic", "textual")}
            assert all(0 <= archive[name].min() and archive[name].max() <= 1 for name in ("visual", "acoustic", "textual"))
    for name in ("visual", "acoustic", "textual"):
        assert gaps["tfidf"][name] > gaps["paper"][name], (name, gaps)


def test_unknown_text_recipe_is_refused(tiny_raw, tmp_path):
    with pytest.raises(ValueError, match="text_recipe must be one of paper, tfidf"):
        convert(tiny_raw, tmp_path / "out", {"min_user_actions": 0, "text_recipe": "bert"})


# --- feed_embeddings.csv as an optional fourth matrix, 'embedding' ---

def embedding_copy(tiny_raw, tmp_path, edit=None):
    folder = broken_copy(tiny_raw, tmp_path)
    text = (tiny_raw / "feed_embeddings.csv").read_text()
    (folder / "feed_embeddings.csv").write_text(edit(text) if edit else text)
    return folder


def test_feed_embedding_adds_a_scaled_matrix_and_counts_feeds_without_one(tiny_raw, tmp_path):
    def drop_three(text):
        lines = text.split("\n")
        return "\n".join(lines[:2] + lines[5:])  # feeds on lines 3, 4 and 5 lose their embedding

    folder = embedding_copy(tiny_raw, tmp_path, drop_three)
    plain = convert(folder, tmp_path / "plain", {"min_user_actions": 0})
    assert "embedding" not in plain["modality_dims"] and plain["feed_embedding"] is None
    manifest = convert(folder, tmp_path / "out", {"min_user_actions": 0, "feed_embedding": True})
    assert manifest["fingerprint"] != plain["fingerprint"]
    assert manifest["feed_embedding"]["feeds_without_embedding"] == 3
    assert manifest["feed_embedding"]["embeddings_of_unknown_feeds"] == 0
    dims = manifest["modality_dims"]
    assert set(dims) == {"visual", "acoustic", "textual", "embedding"}
    assert {k: dims[k] for k in ("visual", "acoustic", "textual")} == plain["modality_dims"]
    assert 1 <= dims["embedding"] < 512  # PCA keeping 90% of the variance
    with np.load(tmp_path / "out" / "wechat.mm.npz") as archive:
        matrix = archive["embedding"]
        assert matrix.shape == (manifest["rows"]["items"], dims["embedding"])
        assert matrix.dtype == np.float32 and matrix.min() >= 0 and matrix.max() <= 1
    fixed = convert(folder, tmp_path / "fixed", {"min_user_actions": 0, "feed_embedding": True, "embedding_dim": 6})
    assert fixed["modality_dims"]["embedding"] == 6


def test_feed_embedding_needs_its_file(tiny_raw, tmp_path):
    folder = broken_copy(tiny_raw, tmp_path)
    with pytest.raises(FileNotFoundError, match="feed_embeddings.csv: file not found"):
        convert(folder, tmp_path / "out", {"min_user_actions": 0, "feed_embedding": True})


def edit_embedding(line_number, change):
    def edit(text):
        lines = text.split("\n")
        feedid, vector = lines[line_number - 1].split(",")
        lines[line_number - 1] = ",".join(change(feedid, vector.split(), lines))
        return "\n".join(lines)
    return edit


@pytest.mark.parametrize("edit, message", [
    (edit_embedding(4, lambda f, v, _: (f, " ".join(v[:-1]))),
     r"feed_embeddings.csv, line 4, field 'feed_embedding': expected 512 space-separated floats, got 511"),
    (edit_embedding(6, lambda f, v, _: (f, " ".join(v + ["0.5"]))),
     r"feed_embeddings.csv, line 6, field 'feed_embedding': expected 512 space-separated floats, got 513"),
    (edit_embedding(3, lambda f, v, _: (f, " ".join(["nan"] + v[1:]))),
     r"feed_embeddings.csv, line 3, field 'feed_embedding': NaN or infinite value \('nan'\)"),
    (edit_embedding(5, lambda f, v, _: (f, " ".join(v[:7] + ["-inf"] + v[8:]))),
     r"feed_embeddings.csv, line 5, field 'feed_embedding': NaN or infinite value \('-inf'\)"),
    (edit_embedding(7, lambda f, v, _: (f, " ".join(v[:9] + ["0.1x"] + v[10:]))),
     r"feed_embeddings.csv, line 7, field 'feed_embedding': expected a number \(value '0.1x'\)"),
    (edit_embedding(8, lambda f, v, lines: (lines[1].split(",")[0], " ".join(v))),
     r"feed_embeddings.csv, line 8, field 'feedid': duplicate feed id"),
])
def test_bad_feed_embeddings_name_file_line_and_field(tiny_raw, tmp_path, edit, message):
    from recbole_mma4ctr.errors import RawFormatError

    folder = embedding_copy(tiny_raw, tmp_path, edit)
    with pytest.raises(RawFormatError, match=message):
        convert(folder, tmp_path / "out", {"min_user_actions": 0, "feed_embedding": True})
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_yaml_keys_reach_the_converter_settings():
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.prepare.sources import converter_settings

    settings = converter_settings(build_config("MMa4CTR", "wechat", overrides={
        "text_recipe": "tfidf", "text_max_dim": "64", "textual_dim": "12", "feed_embedding": "True"}))
    assert settings["text_recipe"] == "tfidf" and settings["text_max_dim"] == 64
    assert settings["textual_dim"] == 12 and settings["feed_embedding"] is True
    assert converter_settings(build_config("MMa4CTR", "wechat"))["text_recipe"] == "paper"  # the yaml's default


@pytest.mark.parametrize("settings, message", [
    ({"visual_dim": -3}, "visual_dim must be a positive integer"),
    ({"text_recipe": "tfidf", "text_max_dim": 0}, "text_max_dim must be a positive integer"),
    ({"token_maxlen": 0}, "token_maxlen must be a positive integer"),
])
def test_widths_that_cannot_work_are_refused_up_front(tiny_raw, tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        convert(tiny_raw, tmp_path / "out", {"min_user_actions": 0, **settings})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["", "nan", "high"])
def test_a_bad_oracle_cell_is_named(tiny_raw, tmp_path, value):
    folder = broken_copy(tiny_raw, tmp_path)
    (folder / "oracle_prob.csv").write_text(replace_cell((tiny_raw / "oracle_prob.csv").read_text(), 6, "p_weighted", value))
    with pytest.raises(RawFormatError, match=rf"oracle_prob.csv, line 6, field 'p_weighted': expected a probability"):
        convert(folder, tmp_path / "out", {"min_user_actions": 0})
