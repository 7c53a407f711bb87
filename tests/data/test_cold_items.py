"""Cold items: the generated samples release feeds over time, so test rows hit feeds never seen in
training (about 15 %, as on the real WeChat data), and the planted content signal lets a content
model score them where an ID model cannot."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_settings
from recbole_mma4ctr.prepare.synthetic import wechat as syn

# The stated band around the ~15 % of real WeChat test feeds never seen in training (docs/data.md).
COLD_BAND = (0.11, 0.21)


def _chronological(folder):
    """user_action.csv in the converter's order: by day, file order within a day."""
    ua = pd.read_csv(folder / "user_action.csv", usecols=["userid", "feedid", "date_"])
    return ua.iloc[np.argsort(ua["date_"].to_numpy(), kind="stable")].reset_index(drop=True)


def _test_cold_share(ua):
    """Share of the chronologically last 10 % of rows (test) whose feed is not in the first 80 %
    (train), the 8:1:1 cut (written independently of the generator's own count)."""
    n_test = len(ua) // 10
    train = set(ua["feedid"].iloc[: len(ua) - 2 * n_test])
    return float((~ua["feedid"].iloc[len(ua) - n_test:].isin(train)).mean())


@pytest.fixture(scope="module", params=[("tiny", 2024), ("tiny", 7), ("sample", 2024)], ids=lambda p: f"{p[0]}-{p[1]}")
def generated(request, tmp_path_factory):
    scale, seed = request.param
    out = tmp_path_factory.mktemp(f"{scale}{seed}")
    summary = syn.write_wechat_raw(out, scale=scale, seed=seed)
    return scale, seed, out, summary, _chronological(out)


def test_test_rows_on_cold_feeds_are_about_15_percent(generated):
    scale, seed, out, summary, ua = generated
    share = _test_cold_share(ua)
    assert COLD_BAND[0] <= share <= COLD_BAND[1], (scale, seed, share)
    # the challenge's day split (train days 1-12, test day 14) has cold feeds too
    day_train = set(ua.loc[ua["date_"] <= 12, "feedid"])
    day_share = float((~ua.loc[ua["date_"] == 14, "feedid"].isin(day_train)).mean())
    assert COLD_BAND[0] <= day_share <= 0.25, (scale, seed, day_share)
    # SYNTHETIC.json states the same shares
    record = json.loads((out / "SYNTHETIC.json").read_text())
    assert record["version"] == syn.GENERATOR_VERSION == "1.3"
    assert record["cold_items"]["test_rows_on_items_not_in_train"] == pytest.approx(share, abs=1e-4)
    assert record["cold_items"]["day_split_test_rows_on_items_not_in_train"] == pytest.approx(day_share, abs=1e-4)
    assert summary["cold_items"] == record["cold_items"]


def test_no_feed_is_shown_before_its_release_day(generated):
    scale, seed, out, summary, ua = generated
    world = syn.build_world(syn.make_params(scale), seed=seed)
    release = pd.Series(world.feed_release, index=world.feedid)
    assert (ua["date_"].to_numpy() >= release[ua["feedid"].to_numpy()].to_numpy()).all()
    # half of the feeds are new, released evenly over the 14 days
    p = world.params
    assert (world.feed_release > 0).sum() == round(p.new_feed_share * p.n_feeds)
    per_day = np.bincount(world.feed_release[world.feed_release > 0], minlength=15)[1:]
    assert per_day.max() - per_day.min() <= 1
    assert summary["counts"]["feeds_released_in_window"] == int(((world.feed_release > 0) & world.feed_active).sum())
    # and each day carries a similar share of the rows (no day more than 30 % off the mean)
    rows = ua["date_"].value_counts().sort_index().to_numpy()
    assert len(rows) == 14 and rows.max() < 1.3 * rows.mean() and rows.min() > 0.7 * rows.mean()


def test_without_new_feeds_test_rows_are_warm(tmp_path):
    """The control: the same world with every feed on offer from day 1 has (almost) no cold test rows."""
    syn.write_wechat_raw(tmp_path, scale="tiny", seed=2024, new_feed_share=0.0)
    assert _test_cold_share(_chronological(tmp_path)) < 0.01


def test_content_model_scores_cold_items_an_id_model_cannot(tmp_path, monkeypatch):
    """MMa4CTR sees items only through their modalities, so the planted topic, quality and music
    signal reaches a feed it never trained on; BPR's embedding of such a feed is untrained."""
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    monkeypatch.chdir(tmp_path)
    settings = run_settings(tmp_path, data_path=tmp_path / "atomic", raw_root=tmp_path / "raw",
                            synthetic_root=tmp_path / "synthetic", synthetic_scale="sample", label_action="read_comment")
    # read_comment (1 in 27) rather than the weighted label (1 in 124): ~260 cold positives, not ~70
    content = run_recbole_mma4ctr("MMa4CTR", "wechat", None, {**settings, "epochs": "10"})
    ids = run_recbole_mma4ctr("BPR", "wechat", None, {**settings, "epochs": "3"})
    cold, cold_bpr = content["test_by_coldness"]["cold_items"], ids["test_by_coldness"]["cold_items"]
    assert cold["rows"] == cold_bpr["rows"] and 0.11 <= cold["rows"] / content["split_sizes"]["test"] <= 0.21
    assert cold["positives"] >= 150  # enough for a stable AUC (its sd is about 0.02 here)
    # seed 2024: MMa4CTR 0.643 on cold items (0.696 warm), BPR 0.454 (0.568 warm)
    assert cold["auc"] >= 0.6, cold
    assert cold["auc"] > cold_bpr["auc"] + 0.1, (cold, cold_bpr)


@pytest.mark.parametrize("seed", [2024, 3])
def test_tiktok_test_rows_on_cold_items_and_release_respected(tmp_path, seed):
    from recbole_mma4ctr.prepare.synthetic import tiktok as st
    from recbole_mma4ctr.prepare.tiktok import TRAIN_COLUMNS, TRAIN_FILE

    summary = st.write_tiktok_raw(tmp_path, scale="tiny", seed=seed)
    train = pd.read_csv(tmp_path / TRAIN_FILE, sep="\t", header=None, names=list(TRAIN_COLUMNS),
                        usecols=["item_id", "time"])
    rows = train.iloc[np.argsort(train["time"].to_numpy(), kind="stable")].rename(columns={"item_id": "feedid"})
    share = _test_cold_share(rows)
    assert COLD_BAND[0] <= share <= COLD_BAND[1], (seed, share)
    assert summary["cold_items"]["test_rows_on_items_not_in_train"] == pytest.approx(share, abs=1e-4)
    world = st.build_world(st.make_params("tiny"), seed=seed)
    release = pd.Series(world.release, index=world.item_id[: world.params.n_items])
    day = (train["time"].to_numpy() - world.params.time_origin) // 86_400 + 1
    assert (day >= release[train["item_id"].to_numpy()].to_numpy()).all()
    assert summary["counts"]["items_released_in_window"] == round(0.35 * world.params.n_items)


def test_tiktok_without_new_items_few_test_rows_are_cold(tmp_path):
    from recbole_mma4ctr.prepare.synthetic import tiktok as st

    summary = st.write_tiktok_raw(tmp_path, scale="tiny", seed=2024, new_item_share=0.0)
    assert summary["cold_items"]["test_rows_on_items_not_in_train"] < 0.05


def test_a_sample_of_the_previous_generator_version_is_regenerated(tmp_path):
    """A cached sample written before items were released over time (version 1.2) must not be
    reused silently: sources.raw_source sees the version and writes a new one."""
    from recbole_mma4ctr.prepare import sources

    sample = tmp_path / "synthetic" / "wechat"
    syn.write_wechat_raw(sample, scale="tiny", seed=7, new_feed_share=0.0)  # no cold rows, like 1.2's
    info = json.loads((sample / "SYNTHETIC.json").read_text())
    (sample / "SYNTHETIC.json").write_text(json.dumps({**info, "version": "1.2"}))
    assert not sources.synthetic_matches(sample, "tiny", 7)
    assert sources.raw_source("wechat", tmp_path / "dataset", tmp_path / "synthetic", "tiny", 7) == sample
    assert json.loads((sample / "SYNTHETIC.json").read_text())["version"] == syn.GENERATOR_VERSION
    assert COLD_BAND[0] <= _test_cold_share(_chronological(sample)) <= COLD_BAND[1]
