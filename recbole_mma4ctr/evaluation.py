"""Metrics on saved test predictions: AUC with weights, LogLoss, and bootstrap intervals over users.

Pure numpy. The comparison uses these on every model's saved test predictions (score, label and
user of each test pair), so a confidence interval and the oracle row are computed the same way
for every model, after training, without RecBole.
"""

from __future__ import annotations

import numpy as np

from .metrics import gauc, uauc


def weighted_auc(scores, labels, weights=None) -> float:
    """ROC AUC where row i counts ``weights[i]`` times; tied scores count one half."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    weights = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    scores, labels, weights = scores[order], labels[order], weights[order]
    # group tied scores; within a group, positives beat the negatives below it and tie the rest
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    positive = np.add.reduceat(weights * labels, starts)
    negative = np.add.reduceat(weights * ~labels, starts)
    negatives_below = np.cumsum(negative) - negative
    total_positive, total_negative = positive.sum(), negative.sum()
    if total_positive == 0 or total_negative == 0:
        return float("nan")
    wins = (positive * (negatives_below + 0.5 * negative)).sum()
    return float(wins / (total_positive * total_negative))


def logloss(probabilities, labels, eps: float = 1e-15) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def bootstrap_auc_interval(scores, labels, users, resamples: int = 200, level: float = 0.95, seed: int = 0):
    """Percentile interval of AUC when whole users are resampled with replacement.

    Resampling users rather than rows respects that one user's rows are not independent. Each
    resample weights a row by how many times its user was drawn, so no data is copied.
    """
    users = np.asarray(users)
    distinct, codes = np.unique(users, return_inverse=True)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        draws = np.bincount(rng.integers(0, len(distinct), len(distinct)), minlength=len(distinct))
        value = weighted_auc(scores, labels, draws[codes])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def summarize(scores, labels, users, probabilities=True, resamples: int = 200) -> dict:
    """AUC, its user-bootstrap interval, GAUC, UAUC and (for probabilities) LogLoss of one model."""
    low, high = bootstrap_auc_interval(scores, labels, users, resamples=resamples)
    summary = {
        "auc": weighted_auc(scores, labels),
        "auc_ci95": [low, high],
        "gauc": float(gauc(scores, labels, users)),
        "uauc": float(uauc(scores, labels, users)),
    }
    if probabilities:
        summary["logloss"] = logloss(scores, labels)
    return summary
