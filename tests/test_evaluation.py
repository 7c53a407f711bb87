"""Pure evaluation helpers: weighted AUC, LogLoss, bootstrap intervals over users."""

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from recbole_mma4ctr.evaluation import bootstrap_auc_interval, logloss, summarize, weighted_auc


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


def test_summarize_reports_everything():
    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(50), 10)
    labels = rng.random(500) < 0.3
    scores = np.clip(labels * 0.3 + rng.random(500) * 0.7, 0, 1)
    summary = summarize(scores, labels, users, resamples=50)
    assert set(summary) == {"auc", "auc_ci95", "gauc", "uauc", "logloss"}
    assert "logloss" not in summarize(scores, labels, users, probabilities=False, resamples=10)
