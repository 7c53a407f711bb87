"""Pure evaluation helpers: weighted AUC, LogLoss, bootstrap intervals over users."""

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from recbole_mma4ctr.stats import bootstrap_auc_interval, logloss, summarize, weighted_auc

pytestmark = pytest.mark.unit  # pure: no RecBole training, no Ray (python -m pytest -m unit)


def test_auc_by_hand_with_a_tie():
    # positives 0.8 and 0.4; negatives 0.4 and 0.1: pairs (0.8>0.4), (0.8>0.1), (0.4=0.4 -> 1/2), (0.4>0.1)
    assert weighted_auc([0.8, 0.4, 0.4, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)


def test_auc_matches_sklearn_and_weights_equal_repetition():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 500) / 20.0
    labels = rng.random(500) < 0.3
    assert weighted_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    weights = rng.integers(0, 4, 500)
    repeated = np.repeat(np.arange(500), weights)
    assert weighted_auc(scores, labels, weights) == pytest.approx(roc_auc_score(labels[repeated], scores[repeated]))


def test_single_class_gives_nan():
    assert math.isnan(weighted_auc([0.1, 0.2], [0, 0]))


def test_logloss_matches_sklearn():
    p = np.array([0.9, 0.2, 0.6, 0.01])
    y = np.array([1, 0, 1, 0])
    assert logloss(p, y) == pytest.approx(log_loss(y, p))


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_users():
    rng = np.random.default_rng(1)

    def data(n_users):
        users = np.repeat(np.arange(n_users), 20)
        labels = rng.random(len(users)) < 0.2
        scores = labels * 0.5 + rng.random(len(users))
        return scores, labels, users

    small = data(30)
    large = data(600)
    low_s, high_s = bootstrap_auc_interval(*small, resamples=200)
    low_l, high_l = bootstrap_auc_interval(*large, resamples=200)
    assert low_l <= weighted_auc(*large[:2]) <= high_l
    assert (high_l - low_l) < (high_s - low_s) / 2


def test_summarize_values_by_hand():
    # user a: positive 0.9 above both negatives -> AUC 1 (3 rows); user b: positives 0.3, 0.5 against
    # negatives 0.8, 0.1 -> 2 of 4 pairs, AUC 1/2 (4 rows); user c: negatives only, left out of GAUC/UAUC.
    users = np.array(["a", "a", "a", "b", "b", "b", "b", "c", "c"])
    scores = np.array([0.9, 0.2, 0.6, 0.3, 0.8, 0.5, 0.1, 0.4, 0.7])
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0, 0])
    summary = summarize(scores, labels, users, resamples=50)
    assert set(summary) == {"auc", "auc_ci95", "gauc", "uauc", "logloss"}
    # globally: 0.9 beats all 6 negatives, 0.3 beats 0.2 and 0.1, 0.5 beats 0.2, 0.1 and 0.4: 11 of 18 pairs
    assert summary["auc"] == pytest.approx(11 / 18, abs=1e-12)
    assert summary["gauc"] == pytest.approx((3 * 1 + 4 * 0.5) / 7, abs=1e-12)
    assert summary["uauc"] == pytest.approx((1 + 0.5) / 2, abs=1e-12)
    # LogLoss: the probability given to each row's own label, p for positives and 1 - p for negatives
    own = [0.9, 0.8, 0.4, 0.3, 0.2, 0.5, 0.9, 0.6, 0.3]
    assert summary["logloss"] == pytest.approx(-sum(math.log(p) for p in own) / 9, abs=1e-12)
    low, high = summary["auc_ci95"]
    assert low <= summary["auc"] <= high and low < high
    ranking = summarize(scores, labels, users, probabilities=False, resamples=50)
    assert ranking == {k: v for k, v in summary.items() if k != "logloss"}


def test_summarize_interval_of_identical_users_is_a_point():
    # two users with the same rows: every bootstrap draw of users has the same AUC, that of one user:
    # positives 0.9 and 0.5 against negatives 0.6 and 0.1 -> 3 of 4 pairs
    users = np.repeat(["x", "y"], 4)
    scores = np.tile([0.9, 0.6, 0.5, 0.1], 2)
    labels = np.tile([1, 0, 1, 0], 2)
    summary = summarize(scores, labels, users, resamples=40)
    assert summary["auc"] == summary["gauc"] == summary["uauc"] == 0.75
    assert summary["auc_ci95"] == [pytest.approx(0.75, abs=1e-12)] * 2


# ---- DeLong's test ---------------------------------------------------------------------------

def brute_force_delong(a, b, labels):
    """DeLong 1988 written out from its definitions: placement values by looping over pairs."""
    from scipy.stats import norm

    labels = np.asarray(labels) > 0.5

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    def placements(s):
        xs, ys = s[labels], s[~labels]
        v10 = np.array([np.mean([psi(x, y) for y in ys]) for x in xs])
        v01 = np.array([np.mean([psi(x, y) for x in xs]) for y in ys])
        return v10, v01

    (a10, a01), (b10, b01) = placements(np.asarray(a, float)), placements(np.asarray(b, float))
    m, n = len(a10), len(a01)
    s10 = np.cov(np.vstack([a10, b10]))         # 2x2, ddof 1
    s01 = np.cov(np.vstack([a01, b01]))
    contrast = np.array([1.0, -1.0])
    variance = contrast @ (s10 / m + s01 / n) @ contrast
    difference = a10.mean() - b10.mean()
    z = difference / np.sqrt(variance)
    return a10.mean(), b10.mean(), z, 2 * norm.sf(abs(z))


def test_delong_by_hand():
    from recbole_mma4ctr.stats import delong

    # positives 0.9, 0.8 / negatives 0.3, 0.2 under a (AUC 1); b scores 0.9, 0.2 / 0.8, 0.3 (AUC 1/2).
    # V10_a = [1, 1], V10_b = [1, 0]; V01_a = [1, 1], V01_b = [1/2, 1/2]
    # Var = var([0, 1]) / 2 + var([1/2, 1/2]) / 2 = 0.25, so z = 0.5 / 0.5 = 1, p = erfc(1 / sqrt 2)
    result = delong([0.9, 0.8, 0.3, 0.2], [0.9, 0.2, 0.8, 0.3], [1, 1, 0, 0])
    assert result["auc_a"] == pytest.approx(1.0) and result["auc_b"] == pytest.approx(0.5)
    assert result["se"] == pytest.approx(0.5) and result["z"] == pytest.approx(1.0)
    assert result["p_value"] == pytest.approx(0.3173105, abs=1e-6)


def test_delong_matches_brute_force_placements_with_ties():
    from recbole_mma4ctr.stats import delong

    rng = np.random.default_rng(3)
    labels = rng.random(120) < 0.35
    a = np.round(labels * 0.6 + rng.random(120), 1)         # rounded: many ties
    b = np.round(labels * 0.3 + 0.5 * a + rng.random(120), 1)
    auc_a, auc_b, z, p = brute_force_delong(a, b, labels)
    result = delong(a, b, labels)
    assert result["auc_a"] == pytest.approx(auc_a) and result["auc_a"] == pytest.approx(roc_auc_score(labels, a))
    assert result["auc_b"] == pytest.approx(auc_b)
    assert result["z"] == pytest.approx(z) and result["p_value"] == pytest.approx(p)


def test_delong_identical_scorers_and_too_few_rows():
    from recbole_mma4ctr.stats import delong

    same = delong([0.1, 0.4, 0.35, 0.8], [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert same["difference"] == 0 and same["p_value"] == 1.0
    assert math.isnan(delong([0.1, 0.9, 0.5], [0.2, 0.3, 0.4], [0, 1, 0])["p_value"])


def test_delong_rejects_at_its_level_under_the_null_and_finds_a_real_gap():
    from recbole_mma4ctr.stats import delong

    rng = np.random.default_rng(4)
    p_null, p_gap = [], []
    for _ in range(300):
        labels = rng.random(300) < 0.3
        shared = rng.normal(size=300)                       # both scorers share some noise
        a = labels + shared + rng.normal(size=300)
        b = labels + shared + rng.normal(size=300)         # same strength: the null holds
        p_null.append(delong(a, b, labels)["p_value"])
        p_gap.append(delong(2 * labels + shared + rng.normal(size=300), b, labels)["p_value"])
    assert 0.02 <= np.mean(np.array(p_null) < 0.05) <= 0.09
    assert np.mean(np.array(p_gap) < 0.05) > 0.9


# ---- paired bootstrap over users -----------------------------------------------------------

def test_paired_bootstrap_equals_repeating_the_drawn_users_rows():
    from recbole_mma4ctr.stats import paired_bootstrap

    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(40), 6)
    labels = rng.random(240) < 0.3
    a = labels * 0.5 + rng.random(240)
    b = labels * 0.3 + rng.random(240)
    result = paired_bootstrap(a, b, labels, users, resamples=100, seed=11)
    # independently: draw users with the same generator, copy their rows, score with sklearn
    draw = np.random.default_rng(11)
    differences = []
    for _ in range(100):
        drawn = draw.integers(0, 40, 40)
        rows = np.concatenate([np.flatnonzero(users == u) for u in drawn])
        differences.append(roc_auc_score(labels[rows], a[rows]) - roc_auc_score(labels[rows], b[rows]))
    assert result["resamples"] == 100
    assert result["difference"] == pytest.approx(roc_auc_score(labels, a) - roc_auc_score(labels, b))
    assert result["ci95"] == pytest.approx([np.quantile(differences, 0.025), np.quantile(differences, 0.975)])


def test_paired_interval_is_narrower_than_either_models_own_and_agrees_with_delong_for_one_row_users():
    from recbole_mma4ctr.stats import delong, paired_bootstrap

    rng = np.random.default_rng(6)
    n = 3000
    users = np.arange(n)                                     # one row per user: rows are independent
    labels = rng.random(n) < 0.3
    shared = rng.normal(size=n)
    a = labels + shared + 0.5 * rng.normal(size=n)
    b = labels + shared + 0.5 * rng.normal(size=n)
    paired = paired_bootstrap(a, b, labels, users, resamples=1000)
    low_a, high_a = bootstrap_auc_interval(a, labels, users, resamples=200)
    low_b, high_b = bootstrap_auc_interval(b, labels, users, resamples=200)
    # the shared noise cancels in the pairing: narrower than either model's own interval
    assert paired["ci95"][1] - paired["ci95"][0] < 0.85 * min(high_a - low_a, high_b - low_b)
    assert paired["ci95"][0] <= paired["difference"] <= paired["ci95"][1]
    width_delong = 2 * 1.959964 * delong(a, b, labels)["se"]
    assert paired["ci95"][1] - paired["ci95"][0] == pytest.approx(width_delong, rel=0.2)


def test_paired_bootstrap_of_a_model_with_itself_is_zero():
    from recbole_mma4ctr.stats import paired_bootstrap

    scores = np.array([0.2, 0.7, 0.4, 0.9, 0.1, 0.6])
    result = paired_bootstrap(scores, scores, [0, 1, 0, 1, 0, 1], [1, 1, 2, 2, 3, 3], resamples=50)
    assert result["difference"] == 0 and result["ci95"] == [0.0, 0.0]


# ---- cold and warm apart -------------------------------------------------------------------

def test_by_coldness_by_hand():
    from recbole_mma4ctr.stats import by_coldness

    # rows:        0     1     2     3     4     5     6     7
    scores =     [0.9, 0.2, 0.6, 0.4, 0.3, 0.8, 0.7, 0.1]
    labels =     [1,   0,   1,   0,   1,   0,   1,   0]
    users =      ["a", "a", "b", "b", "c", "c", "d", "d"]
    warm_item =  [True, True, True, True, False, False, False, True]
    warm_user =  [True, True, True, True, True, True, False, False]
    groups = by_coldness(scores, labels, users, warm_item, warm_user)
    warm = groups["warm_items"]
    # warm rows 0-3 and 7: positives 0.9, 0.6 / negatives 0.2, 0.4, 0.1 -> all 6 pairs won
    assert (warm["rows"], warm["positives"], warm["auc"]) == (5, 2, pytest.approx(1.0))
    # users a (2 rows, AUC 1) and b (2 rows, AUC 1) have both classes; d has only a negative here
    assert warm["gauc"] == pytest.approx(1.0) and warm["uauc"] == pytest.approx(1.0)
    assert warm["users_with_both_classes"] == 2
    cold = groups["cold_items"]
    # cold rows 4-6: positives 0.3, 0.7 / negative 0.8 -> 0 of 2 pairs; user c: AUC 0 (2 rows)
    assert (cold["rows"], cold["auc"], cold["gauc"], cold["uauc"]) == (3, pytest.approx(0.0), pytest.approx(0.0),
                                                                       pytest.approx(0.0))
    assert cold["users_with_both_classes"] == 1
    users_cold = groups["cold_users"]
    assert (users_cold["rows"], users_cold["auc"], users_cold["gauc"]) == (2, pytest.approx(1.0), pytest.approx(1.0))


def test_by_coldness_empty_and_one_class_groups_are_none():
    from recbole_mma4ctr.stats import by_coldness

    groups = by_coldness([0.3, 0.6, 0.2], [0, 1, 0], [1, 2, 2], [True, True, False], [True, True, True])
    assert groups["cold_users"] == {"rows": 0, "positives": 0, "auc": None, "gauc": None, "uauc": None,
                                    "users_with_both_classes": 0}
    assert groups["cold_items"]["rows"] == 1 and groups["cold_items"]["auc"] is None
    assert groups["cold_items"]["uauc"] is None
