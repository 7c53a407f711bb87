"""Known-answer tests of the synthetic WeChat raw-file generator."""

import itertools
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_mma4ctr.prepare.synthetic import wechat as syn

USER_ACTION_HEADER = (
    "userid,feedid,date_,device,read_comment,comment,like,play,stay,click_avatar,forward,"
    "follow,favorite"
)
FEED_INFO_HEADER = (
    "feedid,authorid,videoplayseconds,description,ocr,asr,bgm_song_id,bgm_singer_id,"
    "manual_keyword_list,machine_keyword_list,manual_tag_list,machine_tag_list,"
    "description_char,ocr_char,asr_char"
)
EMBEDDING_HEADER = "feedid,feed_embedding"
ORACLE_HEADER = (
    "userid,feedid,date_,p_weighted,p_read_comment,p_comment,p_like,p_click_avatar,"
    "p_forward,p_follow,p_favorite"
)
FILE_NAMES = {"user_action.csv", "feed_info.csv", "feed_embeddings.csv", "oracle_prob.csv",
              "SYNTHETIC.json"}
# negatives per positive of each action in the real user_action.csv (docs/data.md, "The raw files")
NEG_PER_POS = {"read_comment": 25.9, "like": 36.5, "click_avatar": 124.9, "forward": 236.3,
               "favorite": 715.5, "follow": 1355.3, "comment": 2406.2}
WEIGHTS = {"read_comment": 4, "like": 3, "click_avatar": 2, "forward": 1, "favorite": 1,
           "comment": 1, "follow": 1}
ACTIONS = ["read_comment", "comment", "like", "click_avatar", "forward", "follow", "favorite"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    summary = syn.write_wechat_raw(out, scale="tiny", seed=0)
    return out, summary


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    start = time.perf_counter()
    summary = syn.write_wechat_raw(out, scale="sample", seed=0)
    seconds = time.perf_counter() - start
    ua = pd.read_csv(out / "user_action.csv")
    oracle = pd.read_csv(out / "oracle_prob.csv")
    return out, summary, ua, oracle, seconds


def _feed_info(path):
    return pd.read_csv(path / "feed_info.csv", dtype=str, keep_default_na=False)


def _auc(score, label):
    """Mann-Whitney AUC, ties counted half (written independently of the module)."""
    label = np.asarray(label).astype(bool)
    ranks = pd.Series(np.asarray(score, dtype=float)).rank(method="average").to_numpy()
    n_pos, n_neg = label.sum(), (~label).sum()
    return (ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _label(frame):
    total = sum(WEIGHTS[a] * frame[a].to_numpy() for a in ACTIONS)
    return (total / 13 >= 0.5).astype(int)


# ------------------------------------------------------------------------------- formats


def test_exact_files_and_headers(tiny):
    out, _ = tiny
    assert {p.name for p in out.iterdir()} == FILE_NAMES
    assert not list(out.glob("*.tmp"))
    heads = {name: (out / name).open().readline().rstrip("\n") for name in FILE_NAMES - {"SYNTHETIC.json"}}
    assert heads == {"user_action.csv": USER_ACTION_HEADER, "feed_info.csv": FEED_INFO_HEADER,
                     "feed_embeddings.csv": EMBEDDING_HEADER, "oracle_prob.csv": ORACLE_HEADER}


def test_user_action_types_and_ranges(tiny):
    out, summary = tiny
    ua = pd.read_csv(out / "user_action.csv")
    assert list(ua.columns) == USER_ACTION_HEADER.split(",")
    assert all(pd.api.types.is_integer_dtype(t) for t in ua.dtypes)
    assert len(ua) == 30_000 == summary["counts"]["user_action_rows"]
    assert ua["date_"].min() == 1 and ua["date_"].max() == 14
    assert set(ua["device"].unique()) == {1, 2}
    for a in ACTIONS:
        assert set(ua[a].unique()) <= {0, 1}
    assert (ua["play"] >= 0).all() and (ua["stay"] >= ua["play"]).all()
    assert not ua.duplicated(["userid", "feedid"]).any()
    # grouped by user (ascending userid), chronological inside a user
    assert ua["userid"].is_monotonic_increasing
    assert (ua.groupby("userid")["date_"].diff().fillna(0) >= 0).all()
    # a user mostly keeps one device
    main_share = ua.groupby("userid")["device"].agg(lambda d: d.value_counts().iloc[0] / len(d))
    assert main_share.mean() > 0.9


def test_play_follows_video_length_and_engagement(tiny):
    out, _ = tiny
    ua = pd.read_csv(out / "user_action.csv")
    fi = pd.read_csv(out / "feed_info.csv", usecols=["feedid", "videoplayseconds"])
    vps = ua["feedid"].map(fi.set_index("feedid")["videoplayseconds"]) * 1000
    assert (ua["play"] <= 5 * vps + 1).all()
    assert np.corrcoef(ua["play"], vps)[0, 1] > 0.3
    ratio = ua["play"] / vps
    assert ratio[ua["like"] == 1].median() > ratio[ua["like"] == 0].median()
    assert (ua.loc[ua["read_comment"] == 1, "stay"] - ua.loc[ua["read_comment"] == 1, "play"]).median() > \
        (ua.loc[ua["read_comment"] == 0, "stay"] - ua.loc[ua["read_comment"] == 0, "play"]).median()


def test_feed_info_formats(tiny):
    out, summary = tiny
    fi = _feed_info(out)
    assert list(fi.columns) == FEED_INFO_HEADER.split(",")
    assert len(fi) == 500 and fi["feedid"].is_unique
    assert all(re.fullmatch(r"\d+", v) for v in fi["feedid"])
    assert all(re.fullmatch(r"\d+", v) for v in fi["authorid"])
    assert all(2 <= int(v) <= 300 for v in fi["videoplayseconds"])
    tokens = re.compile(r"(\d+( \d+)*)?")
    for col in ("description", "ocr", "asr", "description_char", "ocr_char", "asr_char"):
        assert all(tokens.fullmatch(v) for v in fi[col]), col
    for col in ("manual_keyword_list", "machine_keyword_list", "manual_tag_list"):
        assert all(re.fullmatch(r"(\d+(;\d+)*)?", v) for v in fi[col]), col
    pairs = 0
    for v in fi["machine_tag_list"]:
        for pair in filter(None, v.split(";")):
            tag, prob = pair.split(" ")
            assert re.fullmatch(r"\d+", tag) and re.fullmatch(r"0\.\d{8}|1\.0{8}", prob)
            assert 0.0 <= float(prob) <= 1.0
            pairs += 1
    assert pairs > len(fi)
    for col in ("bgm_song_id", "bgm_singer_id"):
        assert all(re.fullmatch(r"(\d+)?", v) for v in fi[col])
    assert ((fi["bgm_song_id"] == "") == (fi["bgm_singer_id"] == "")).all()
    for col, cap in (("ocr", 150), ("asr", 250), ("description", 60)):
        lengths = fi[col].str.split().str.len().fillna(0)
        assert lengths.max() <= cap and lengths[lengths > 0].nunique() > 10
    # pandas' default reader copes with the empty fields
    default = pd.read_csv(out / "feed_info.csv")
    assert default["ocr"].isna().any() and default["bgm_song_id"].isna().any()
    # some feeds never appear in the actions, like the real data
    ua = pd.read_csv(out / "user_action.csv", usecols=["feedid"])
    unseen = len(fi) - ua["feedid"].nunique()
    assert 0.05 * len(fi) <= unseen <= 0.15 * len(fi)
    assert set(ua["feedid"]) <= set(fi["feedid"].astype(int))
    assert summary["counts"]["feeds_in_actions"] == ua["feedid"].nunique()


def test_empty_shares_and_gaps(sample):
    out = sample[0]
    fi = _feed_info(out)
    empty = (fi == "").mean()
    for col, share in (("ocr", 0.15), ("asr", 0.10), ("description", 0.05), ("bgm_song_id", 0.20),
                       ("ocr_char", 0.15), ("asr_char", 0.10)):
        assert abs(empty[col] - share) < 0.03, (col, empty[col])
    # each field has gaps that its sibling fills (the recipe's "gaps filled from ...")
    for word, char in (("ocr", "ocr_char"), ("asr", "asr_char")):
        assert ((fi[word] == "") & (fi[char] != "")).sum() > 20
        assert ((fi[char] == "") & (fi[word] != "")).sum() > 20


def test_feed_embeddings(tiny):
    out, _ = tiny
    emb = pd.read_csv(out / "feed_embeddings.csv")
    assert list(emb.columns) == ["feedid", "feed_embedding"]
    vectors = np.array([np.array(v.split(" "), dtype=float) for v in emb["feed_embedding"]])
    assert vectors.shape == (500, 512) and np.isfinite(vectors).all()
    fi = pd.read_csv(out / "feed_info.csv", usecols=["feedid"])
    assert list(emb["feedid"]) == list(fi["feedid"])


def test_synthetic_json(tiny):
    out, summary = tiny
    record = json.loads((out / "SYNTHETIC.json").read_text())
    assert record["synthetic"] is True and record["scale"] == "tiny" and record["seed"] == 0
    assert record["generator"] and record["version"]
    assert record["params"]["n_users"] == 200 and record["params"]["n_topics"] == 24
    assert record["counts"]["user_action_rows"] == 30_000
    for key in ("positive_rate", "weighted_label", "oracle_auc", "counts"):
        assert summary[key] == record[key]
    assert set(summary["paths"]) >= {"user_action", "feed_info", "feed_embeddings", "oracle_prob"}
    assert all(Path(p).exists() for p in summary["paths"].values())


# --------------------------------------------------------------------- determinism, API


def test_same_seed_identical_other_seed_different(tiny, tmp_path):
    out, _ = tiny
    syn.write_wechat_raw(tmp_path / "again", scale="tiny", seed=0)
    syn.write_wechat_raw(tmp_path / "other", scale="tiny", seed=1)
    for name in FILE_NAMES:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    for name in FILE_NAMES:
        assert (out / name).read_bytes() != (tmp_path / "other" / name).read_bytes(), name
    assert not list((tmp_path / "again").glob("*.tmp"))


def test_overrides_and_errors(tmp_path):
    with pytest.raises(ValueError, match="bogus_knob"):
        syn.write_wechat_raw(tmp_path / "x", scale="tiny", bogus_knob=3)
    with pytest.raises(ValueError, match="huge"):
        syn.write_wechat_raw(tmp_path / "x", scale="huge")
    with pytest.raises(ValueError):
        syn.write_wechat_raw(tmp_path / "x", scale="tiny", n_actions=10**9)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    summary = syn.write_wechat_raw(tmp_path / "small", scale="tiny", n_users=40, n_feeds=150,
                                   n_actions=2_000, n_topics=6, noise=0.5)
    ua = pd.read_csv(tmp_path / "small" / "user_action.csv")
    assert len(ua) == 2_000 and ua["userid"].nunique() == 40
    assert len(pd.read_csv(tmp_path / "small" / "feed_info.csv")) == 150
    assert summary["params"]["n_topics"] == 6 and summary["params"]["noise"] == 0.5
    assert sorted(p.name for p in (tmp_path / "small").iterdir()) == sorted(FILE_NAMES)


@pytest.mark.unit
def test_scale_presets():
    full = syn.make_params("full")
    assert (full.n_users, full.n_feeds, full.n_active_feeds, full.n_actions, full.n_days) == \
        (20_000, 106_444, 96_564, 7_317_882, 14)
    tiny = syn.make_params("tiny")
    assert (tiny.n_users, tiny.n_feeds, tiny.n_actions) == (200, 500, 30_000)
    sample = syn.make_params("sample")
    assert sample.n_users == 2_000 and sample.n_feeds == 4_000
    assert 300_000 <= sample.n_actions <= 400_000
    assert syn.make_params("tiny", action_beta={a: 1.0 for a in ACTIONS}).action_beta == (1.0,) * 7


@pytest.mark.unit
def test_weighted_probability_is_the_enumeration():
    rng = np.random.default_rng(3)
    prob = rng.uniform(0, 1, size=(25, 7)) ** 2
    weights = np.array([WEIGHTS[a] for a in ACTIONS])
    expected = np.zeros(len(prob))
    for combo in itertools.product((0, 1), repeat=7):
        c = np.array(combo)
        if (c @ weights) / 13 >= 0.5:
            expected += np.prod(np.where(c == 1, prob, 1 - prob), axis=1)
    np.testing.assert_allclose(syn.weighted_label_probability(prob), expected, rtol=1e-12)
    # and the label rule: read_comment + like is the smallest pair that qualifies
    acts = np.zeros((4, 7), dtype=int)
    acts[0, [0, 2]] = 1  # read_comment + like = 7
    acts[1, [0, 3]] = 1  # read_comment + click_avatar = 6
    acts[2, [2, 3, 4, 6]] = 1  # like + click_avatar + forward + favorite = 7
    acts[3] = [0, 1, 1, 1, 0, 0, 0]  # comment + like + click_avatar = 6
    assert syn.weighted_label(acts).tolist() == [1, 0, 1, 0]


# ------------------------------------------------------------ planted structure, content


def test_ocr_tokens_shared_within_topic(tiny):
    out, _ = tiny
    world = syn.build_world(syn.make_params("tiny"), seed=0)
    fi = _feed_info(out)
    assert (fi["feedid"].astype(int).to_numpy() == world.feedid).all()
    sets = [set(v.split()) for v in fi["ocr"]]
    rng = np.random.default_rng(0)
    same, diff = [], []
    for i, j in rng.integers(len(sets), size=(20_000, 2)):
        if i == j or not sets[i] or not sets[j]:
            continue
        jac = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
        (same if world.feed_topic[i] == world.feed_topic[j] else diff).append(jac)
    assert len(same) > 200
    assert np.mean(same) > 3 * np.mean(diff)


def test_token_ids_carry_the_topic(tiny):
    out, _ = tiny
    params = syn.make_params("tiny")
    world = syn.build_world(params, seed=0)
    fi = _feed_info(out)
    hits = total = 0
    for topic, ocr in zip(world.feed_topic, fi["ocr"]):
        ids = np.array(ocr.split(), dtype=int)
        block = ids[ids > params.word_common]
        hits += ((block - params.word_common - 1) // params.word_block == topic).sum()
        total += len(ids)
    assert 0.5 < hits / total < 0.75  # token_main_share 0.62 of the tokens
    # author home topic drives the feed topic
    assert (world.author_topic[world.feed_author] == world.feed_topic).mean() > 0.75


def test_padded_token_pca_keeps_many_dims(sample):
    fi = _feed_info(sample[0])

    def padded(col, fill=None):
        seqs = []
        for i, v in enumerate(fi[col]):
            if not v and fill:
                v = fi[fill].iat[i]
            seqs.append(np.array(v.split(), dtype=float))
        width = max(len(s) for s in seqs)
        x = np.zeros((len(seqs), width))
        for i, s in enumerate(seqs):
            x[i, : len(s)] = s
        return x

    def dims90(x):
        var = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2
        return int(np.searchsorted(np.cumsum(var) / var.sum(), 0.9) + 1)

    visual = dims90(padded("ocr", "ocr_char"))
    acoustic = dims90(padded("asr_char", "asr"))
    textual = dims90(padded("description", "description_char"))
    assert min(visual, acoustic, textual) >= 10
    assert visual + acoustic + textual > 160


# ------------------------------------------------------------ planted structure, actions


def test_action_rates_match_data_md(sample):
    _, summary, ua, _, _ = sample
    for a, npp in NEG_PER_POS.items():
        pos = ua[a].sum()
        realised = (len(ua) - pos) / pos
        assert abs(realised / npp - 1) < 0.25, (a, realised, npp)
        assert summary["positive_rate"][a] == pytest.approx(pos / len(ua))


def test_weighted_label_rule_and_rate(sample):
    _, summary, ua, _, _ = sample
    label = _label(ua)
    rate = label.mean()
    assert 1 / 400 <= rate <= 1 / 100
    assert summary["weighted_label"]["positive_rate"] == pytest.approx(rate)
    # correlated actions: far more positives than independent actions would give
    independent = syn.weighted_label_probability(ua[ACTIONS].mean().to_numpy()[None, :])[0]
    assert rate > 2 * independent


def test_oracle_aligns_and_is_calibrated(sample):
    _, summary, ua, oracle, _ = sample
    assert list(oracle.columns) == ORACLE_HEADER.split(",")
    assert len(oracle) == len(ua)
    for col in ("userid", "feedid", "date_"):
        assert (oracle[col].to_numpy() == ua[col].to_numpy()).all()
    probs = oracle.iloc[:, 3:].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    # the noise shared by all actions only adds co-occurrence: P(label) >= P(rc) P(like)
    assert (oracle["p_weighted"] >= oracle["p_read_comment"] * oracle["p_like"] * (1 - 1e-6)).all()
    n = len(ua)
    for a in ACTIONS:
        p = oracle["p_" + a]
        sd = np.sqrt((p * (1 - p)).sum()) / n
        assert abs(p.mean() - ua[a].mean()) < 4 * sd + 1e-9, a
    label = _label(ua)
    pw = oracle["p_weighted"]
    assert abs(pw.mean() - label.mean()) < 4 * np.sqrt((pw * (1 - pw)).sum()) / n


def test_oracle_auc_is_a_realistic_ceiling(sample):
    _, summary, ua, oracle, _ = sample
    auc = _auc(oracle["p_weighted"], _label(ua))
    assert 0.72 <= auc <= 0.9
    assert summary["oracle_auc"]["weighted"] == pytest.approx(auc, abs=1e-4)
    for a in ("read_comment", "like"):
        assert 0.6 < _auc(oracle["p_" + a], ua[a]) < 0.9


def test_users_activity_and_taste(sample):
    out, summary, ua, _, _ = sample
    per_user = ua.groupby("userid").size()
    assert len(per_user) == 2_000
    assert 0.6 <= (per_user >= 100).mean() <= 0.95
    assert per_user.max() > 3 * per_user.min()
    assert summary["counts"]["users_with_at_least_100_actions"] == int((per_user >= 100).sum())
    # the watched-topic mix reflects taste, and engagement follows affinity
    world = syn.build_world(syn.make_params("sample"), seed=0)
    user = np.searchsorted(world.userid, ua["userid"].to_numpy())
    feed_pos = pd.Series(np.arange(len(world.feedid)), index=world.feedid)
    topic = world.feed_topic[feed_pos[ua["feedid"].to_numpy()].to_numpy()]
    watched = np.zeros_like(world.taste)
    np.add.at(watched, (user, topic), 1)
    watched /= watched.sum(axis=1, keepdims=True)
    corr = [np.corrcoef(w, t)[0, 1] for w, t in zip(watched, world.taste)]
    assert np.mean(corr) > 0.7
    affinity = world.affinity[user, topic]
    high, low = affinity > 0.8, affinity < 0.2
    assert ua["like"][high].mean() > 1.5 * ua["like"][low].mean()


def test_sample_generates_quickly(sample):
    assert sample[4] < 30  # the brief's budget is ~10 s on 2 cores; leave room for slow CI
