"""Fidelity to the authors' released code: their split, their modality recipe, their loss and MLP.

Each expected value is computed here the way the authors' scripts compute it (Python sets, a
dict of lists, slicing by ``int(n * 0.8)``, Keras-style post padding), independently of the
project's code, on small hand-made or generated inputs with a known answer.
"""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_settings
from recbole_mma4ctr.data.paper_split import positional_cut_points
from recbole_mma4ctr.prepare.authors_order import authors_order, last_pair_device, set_order_positions

PAPER_ROWS = {"dedupe": "user_feed_label", "row_order": "authors", "device_choice": "last_pair"}


def authors_listing(triples):
    """The authors' preprocess_inter.py + get_userid_itemid + cross_matrix.py row order, literally:
    dedupe through a set, group the set's listing by user in a dict of lists, then flatten."""
    user_feed = {}
    for user, feed, label in set(tuple(t) for t in triples):
        user_feed.setdefault(user, []).append((user, feed, label))
    return user_feed


def authors_split(rows):
    """mlp.py's cut of the row list."""
    n = len(rows)
    return rows[:int(n * 0.8)], rows[int(n * 0.8):int(n * 0.9)], rows[int(n * 0.9):]


@pytest.mark.unit
def test_set_positions_are_pythons_own_set_order():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 40, size=(500, 3)) * np.array([1000, 7, 1]) % np.array([50_000, 300, 2])
    positions = set_order_positions(rows[:, 0], rows[:, 1], rows[:, 2])
    listing = list(set(tuple(r) for r in rows.tolist()))
    assert [listing[p] for p in positions] == [tuple(r) for r in rows.tolist()]


@pytest.mark.unit
def test_authors_order_groups_the_set_listing_by_user():
    rng = np.random.default_rng(5)
    users, feeds, labels = rng.integers(0, 6, 80) * 1013, rng.integers(0, 30, 80), rng.integers(0, 2, 80)
    positions = set_order_positions(users, feeds, labels)
    keep = np.unique(positions, return_index=True)[1]  # one row per distinct triple
    ours = authors_order(keep, users, positions)
    expected = [t for user_rows in authors_listing(zip(users.tolist(), feeds.tolist(), labels.tolist())).values()
                for t in user_rows]
    assert list(zip(users[ours].tolist(), feeds[ours].tolist(), labels[ours].tolist())) == expected


@pytest.mark.unit
def test_last_pair_device_is_the_last_pair_their_set_lists():
    users = np.array([5, 5, 9, 9, 9, 12, 5, 40_000, 40_000])
    devices = np.array([1, 2, 2, 1, 2, 1, 1, 2, 1])
    chosen = {}
    for user, device in set(zip(users.tolist(), devices.tolist())):
        chosen[user] = device
    distinct, device = last_pair_device(users, devices)
    assert dict(zip(distinct.tolist(), device.tolist())) == chosen


@pytest.mark.unit
@pytest.mark.parametrize("n", [11, 23, 100, 321_844, 7_317_882])
def test_positional_cut_is_int_of_n_times_the_cumulative_ratio(n):
    assert positional_cut_points(n, [0.8, 0.1, 0.1]) == [int(n * 0.8), int(n * 0.9)]


def hand_made_raw(tiny_raw, folder):
    """A hand-made user_action.csv over the generated feeds: 4 users, duplicate rows, 2 devices."""
    folder.mkdir(parents=True)
    shutil.copy(tiny_raw / "feed_info.csv", folder / "feed_info.csv")
    feeds = pd.read_csv(tiny_raw / "feed_info.csv", usecols=["feedid"])["feedid"].to_numpy()
    rng = np.random.default_rng(11)
    rows = []
    for user, count in ((101, 9), (57, 7), (3, 2), (880, 8)):
        for _ in range(count):
            rows.append({"userid": user, "feedid": int(rng.choice(feeds[:12])), "date_": int(rng.integers(1, 15)),
                         "device": int(rng.integers(1, 3)), "read_comment": int(rng.random() < 0.3),
                         "comment": 0, "like": int(rng.random() < 0.4), "play": 1000, "stay": 2000,
                         "click_avatar": 0, "forward": 0, "follow": 0, "favorite": 0})
    rows += [dict(rows[0]), dict(rows[4]), dict(rows[16])]  # exact duplicates (user 3 keeps 2 distinct rows)
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "user_action.csv", index=False)
    return frame


def test_paper_split_of_a_hand_made_set_matches_the_authors_rule_for_every_model(tiny_raw, tmp_path):
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.prepare.wechat import convert, weighted_label
    from recbole_mma4ctr.utils import create_dataset

    raw = hand_made_raw(tiny_raw, tmp_path / "raw")
    manifest = convert(tmp_path / "raw", tmp_path / "data" / "hm", {"min_user_actions": 3, **PAPER_ROWS})
    for suffix in ("inter", "item", "mm.npz"):
        shutil.move(tmp_path / "data" / "hm" / f"wechat.{suffix}", tmp_path / "data" / "hm" / f"hm.{suffix}")
    labels = weighted_label({a: raw[a].to_numpy() for a in ("read_comment", "like", "click_avatar", "forward",
                                                             "favorite", "comment", "follow")}).astype(int)
    listing = authors_listing(zip(raw["userid"].tolist(), raw["feedid"].tolist(), labels.tolist()))
    listing = {user: rows for user, rows in listing.items() if len(rows) >= 3}  # their filter, after the dedupe
    expected_rows = [t for rows in listing.values() for t in rows]
    assert 3 not in listing and manifest["dropped"]["duplicate_user_feed_label"] >= 3
    assert manifest["rows"]["inter"] == len(expected_rows)

    inter = pd.read_csv(tmp_path / "data" / "hm" / "hm.inter", sep="\t")
    written = list(zip(inter["user_id:token"], inter["item_id:token"], inter["label:float"].astype(int)))
    assert written == expected_rows  # the converter writes their order, timestamp = position
    chosen = {}
    for user, device in set(zip(raw["userid"].tolist(), raw["device"].tolist())):
        chosen[user] = device
    assert inter["device:float"].tolist() == [chosen[u] for u in inter["user_id:token"]]

    expected = authors_split(expected_rows)
    n = len(expected_rows)
    assert len(expected[0]) != n - 2 * int(0.1 * n)  # RecBole's own RS rule would cut elsewhere here
    for model in ("MMa4CTR", "BPR", "FPMC"):
        config = build_config(model, "hm", None, run_settings(tmp_path, data_path=tmp_path / "data",
                                                              split_rule="positional", profile_source="all"))
        dataset = create_dataset(config)
        for part, want in zip(dataset.build(), expected):
            feat = part.inter_feat
            got = list(zip(dataset.id2token("user_id", feat["user_id"]).astype(int).tolist(),
                           dataset.id2token("item_id", feat["item_id"]).astype(int).tolist(),
                           feat["label"].long().tolist()))
            assert got == want, model


def test_a_dataset_recbole_does_not_extend_is_refused_under_the_positional_rule(tiny_atomic, tmp_path):
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.data.paper_split import recbole_dataset

    config = build_config("BPR", "tw", None, run_settings(tmp_path, data_path=tmp_path, split_rule="positional"))
    config["MODEL_TYPE"] = __import__("recbole.utils", fromlist=["ModelType"]).ModelType.KNOWLEDGE
    with pytest.raises(ValueError, match="split_rule positional: BPR uses RecBole's knowledge dataset"):
        recbole_dataset(config)


def held_out_r2(features, target, seed=0):
    """Cross-validated R^2 of a tree ensemble predicting ``target`` from ``features``."""
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.model_selection import KFold, cross_val_predict

    model = ExtraTreesRegressor(n_estimators=100, random_state=seed, n_jobs=1)
    predicted = cross_val_predict(model, features, target, cv=KFold(5, shuffle=True, random_state=seed))
    return 1 - np.mean((predicted - target) ** 2) / np.var(target)


def test_the_acoustic_matrix_keeps_the_planted_bgm_signal_and_the_old_recipe_loses_it(tiny_raw, tiny_atomic):
    from recbole_mma4ctr.fusion import minmax_scale, pca_reduce
    from recbole_mma4ctr.prepare import tokens, wechat
    from recbole_mma4ctr.prepare.synthetic.wechat import build_world, make_params

    out, manifest = tiny_atomic
    world = build_world(make_params("tiny"), 7)  # the tiny_raw fixture's world
    hit_of = dict(zip(world.feedid.tolist(), world.feed_bgm_hit.tolist()))
    with np.load(out / "wechat.mm.npz") as archive:
        items, acoustic = archive["item_id"].astype(int), archive["acoustic"]
    hit = np.array([hit_of[i] for i in items])
    assert 0.1 < hit.mean() < 0.4
    parts = manifest["modality_parts"]["acoustic"]
    assert acoustic.shape[1] == parts["asr_char_pca"] + parts["bgm_singer_song"]
    ours = held_out_r2(acoustic, hit)
    chance = held_out_r2(acoustic, np.random.default_rng(1).permutation(hit))

    # the old recipe: the bgm embeddings appended to the padded ids BEFORE the PCA
    feeds, feed_ids = wechat.read_feeds(tiny_raw / "feed_info.csv")
    lists, music = wechat._token_lists(feeds, wechat.default_settings())
    padded = np.hstack([tokens.pad_sequences(lists["acoustic"][0], 512), music])
    old = minmax_scale(pca_reduce(padded, 0.9))[wechat.rows_in(items, feed_ids)]
    before_pca = held_out_r2(old, hit)
    assert ours > 0.4 and chance < 0.1, (ours, chance)  # seen: 0.61 and -0.09
    print(f"held-out R^2 of the hit flag: ours {ours:.3f}, shuffled {chance:.3f}, bgm before the PCA {before_pca:.3f}")
    assert before_pca < 0.15 and ours - before_pca > 0.3, (ours, before_pca)  # seen: -0.04


def test_the_textual_modality_is_three_parts_with_their_widths_and_padding_at_the_end(tiny_raw, tiny_atomic):
    out, manifest = tiny_atomic
    feeds = pd.read_csv(tiny_raw / "feed_info.csv", dtype=str, keep_default_na=False)
    keywords = [[int(k) for k in cell.split(";") if k] for cell in feeds["machine_keyword_list"]]
    tags = [[int(pair.split(" ")[0]) for pair in machine.split(";") if pair] or
            [int(t) for t in manual.split(";") if t]
            for machine, manual in zip(feeds["machine_tag_list"], feeds["manual_tag_list"])]
    parts = manifest["modality_parts"]["textual"]
    assert list(parts) == ["description_pca", "machine_keyword_list", "machine_tag_list"]
    widths = (max(map(len, keywords)), max(map(len, tags)))
    assert (parts["machine_keyword_list"], parts["machine_tag_list"]) == widths
    assert manifest["modality_dims"]["textual"] == sum(parts.values())

    def post_padded(lists, width):  # Keras pad_sequences(padding='post'): ids first, zeros after
        return np.array([row + [0] * (width - len(row)) for row in lists], dtype=np.float64)

    raw_ids = np.hstack([post_padded(keywords, widths[0]), post_padded(tags, widths[1])])
    span = raw_ids.max(axis=0) - raw_ids.min(axis=0)
    scaled = np.where(span > 0, (raw_ids - raw_ids.min(axis=0)) / np.where(span > 0, span, 1), 0)
    row_of = dict(zip(feeds["feedid"].astype(int).tolist(), range(len(feeds))))
    with np.load(out / "wechat.mm.npz") as archive:
        items, textual = archive["item_id"].astype(int), archive["textual"]
    expected = scaled[[row_of[i] for i in items]]
    np.testing.assert_allclose(textual[:, parts["description_pca"]:], expected, atol=1e-6)


@pytest.mark.unit
def test_batch_softmax_loss_equals_a_hand_computed_value():
    from recbole_mma4ctr.model.mma4ctr import batch_softmax_loss

    logits, label = torch.tensor([0.0, 1.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    p = [0.5, 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.0))]
    log_sum = math.log(sum(math.exp(v) for v in p))
    by_hand = -((p[0] - log_sum) + (p[2] - log_sum))  # 2 * 1.61626 - 0.5 - 0.26894
    assert batch_softmax_loss(logits, label).item() == pytest.approx(by_hand, rel=1e-6)
    assert by_hand == pytest.approx(2.46372, abs=1e-5)
    # what the authors call: CrossEntropyLoss on the 1-d batch of sigmoid outputs
    assert torch.nn.CrossEntropyLoss()(torch.sigmoid(logits), label).item() == pytest.approx(by_hand, rel=1e-6)


def model_config(**extra):
    from recbole_mma4ctr.settings import properties_dir, read_yaml

    return {**read_yaml(properties_dir() / "model" / "MMa4CTR.yaml"), "LABEL_FIELD": "label",
            "device": torch.device("cpu"), **extra}


def fake_dataset(item_dims):
    from types import SimpleNamespace

    fields = ["profile_visual", "profile_acoustic", "profile_textual", "item_mm"]
    return SimpleNamespace(mm_feature_fields=fields, field2seqlen={**{f: 22 for f in fields[:3]}, "item_mm": item_dims})


def test_the_model_trains_on_the_batch_softmax_loss_when_asked():
    from recbole_mma4ctr.model.mma4ctr import MMa4CTR, batch_softmax_loss

    model = MMa4CTR(model_config(loss_type="batch_softmax"), fake_dataset(10))
    batch = {f: torch.rand(6, 22) for f in ("profile_visual", "profile_acoustic", "profile_textual")}
    batch.update(item_mm=torch.rand(6, 10), label=torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0]))
    assert model.calculate_loss(batch).item() == pytest.approx(batch_softmax_loss(model(batch), batch["label"]).item())
    with pytest.raises(ValueError, match="loss_type must be one of batch_softmax, bce"):
        MMa4CTR(model_config(loss_type="hinge"), fake_dataset(10))


@pytest.mark.unit
@pytest.mark.parametrize("item_dims, widths, parameters", [
    (128, [256, 128, 64, 16, 4], 92_185),  # 194 inputs: the released code's count
    (103, [256, 128, 64, 16, 4], 85_785),  # TikTok's 169 inputs: 43,520 + 32,896 + 8,256 + 1,040 + 68 + 5
    (263, [256, 64, 16, 4], 102_041),  # 329 inputs (201-500): 84,480 + 16,448 + 1,040 + 68 + 5
])
def test_released_mlp_widths_and_parameter_counts(item_dims, widths, parameters):
    from recbole_mma4ctr.model.mma4ctr import MMa4CTR

    model = MMa4CTR(model_config(mlp_hidden_size="released"), fake_dataset(item_dims))
    assert model.hidden_sizes == widths
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == parameters
    paper = MMa4CTR(model_config(), fake_dataset(128))
    assert sum(p.numel() for p in paper.parameters()) == 29_225  # the paper's 194-128-32-4-1


@pytest.mark.unit
def test_each_modality_wider_than_the_cap_is_reduced_before_fusion():
    from recbole_mma4ctr.fusion import fuse

    rng = np.random.default_rng(0)
    modalities = {"visual": rng.random((300, 192)), "acoustic": rng.random((300, 242)), "textual": rng.random((300, 73))}
    assert fuse(modalities, "visual").shape[1] == 192
    assert fuse(modalities, "visual", modality_max_dim=128).shape[1] == 128
    assert fuse(modalities, "textual", modality_max_dim=128).shape[1] == 73
    assert fuse(modalities, "vt_cross", modality_max_dim=128).shape[1] == 73
    assert fuse(modalities, "vat_concat", modality_max_dim=128).shape[1] == 128
    # the acoustic part of va_concat is the 128-column PCA, not the raw 242 columns
    reduced = fuse(modalities, "acoustic", modality_max_dim=128)
    assert not np.allclose(fuse(modalities, "va_concat", max_dim=10_000, modality_max_dim=128)[:, 128:], 0)
    assert fuse(modalities, "va_concat", max_dim=10_000, modality_max_dim=128)[:, 128:].shape == reduced.shape


def test_the_paper_protocol_file_sets_every_step():
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.settings import properties_dir
    from recbole_mma4ctr.prepare.sources import converter_settings

    protocols = properties_dir() / "protocol"
    paper = build_config("MMa4CTR", "wechat", [str(protocols / "paper.yaml")])
    assert paper["split_rule"] == "positional" and paper["eval_args"]["group_by"] is None
    assert paper["profile_source"] == "all" and paper["fusion_modality_max_dim"] == 128
    assert {k: v for k, v in converter_settings(paper).items() if k in PAPER_ROWS} == PAPER_ROWS
    honest = build_config("MMa4CTR", "wechat", [str(protocols / "honest.yaml")])
    assert honest["split_rule"] == "recbole" and honest["eval_args"]["order"] == "TO"
    assert honest["profile_source"] == "train" and honest["fusion_modality_max_dim"] is None
    assert converter_settings(honest)["row_order"] == "chronological"


def test_the_converter_cli_reaches_the_row_settings(tiny_raw, tmp_path):
    import json
    import subprocess
    import sys

    from recbole_mma4ctr.prepare.wechat import convert

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "recbole_mma4ctr.prepare", "wechat", "--raw", str(tiny_raw), "--out",
                           str(out), "--min_user_actions", "0", "--dedupe", "user_feed_label", "--row_order", "authors",
                           "--device_choice", "last_pair"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest["settings"][k] for k in PAPER_ROWS} == PAPER_ROWS
    again = convert(tiny_raw, out, {"min_user_actions": 0, **PAPER_ROWS})  # the run path's keys: up to date
    assert again["fingerprint"] == manifest["fingerprint"] and again["seconds"] == manifest["seconds"]
