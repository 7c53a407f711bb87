"""The test metrics of this project, each formula stated once, computed from saved predictions.

Pure numpy (and ``scipy.stats.rankdata``). The comparison applies these to every model's saved
test predictions (score, label, user of each test pair), after training and without RecBole, so
intervals, tests and cold/warm splits are computed the same way for every model.

Notation: test rows i with label y_i in {0, 1}, score s_i and user u_i; P the positive rows, N
the negative rows; psi(a, b) = 1 if a > b, 1/2 if a = b, 0 otherwise.

* **Global AUC** (``weighted_auc``): AUC = sum_{i in P} sum_{j in N} psi(s_i, s_j) / (|P| |N|),
  over all test rows at once; with row weights w, each pair counts w_i w_j.
* **GAUC** (``metrics.gauc``), impression-weighted as FuxiCTR / BARS: GAUC = sum_u n_u AUC_u /
  sum_u n_u, where AUC_u is the AUC of user u's rows alone and n_u the user's number of rows,
  over users whose rows hold both classes.
* **UAUC** (``metrics.uauc``), the plain mean as the WeChat Big Data Challenge 2021 scored it:
  UAUC = mean_u AUC_u over users whose rows hold both classes (the others are dropped).
* **RecBole's own GAUC** (named apart; not computed here): a *ranking* metric of full-sort or
  sampled ranks, weighted by each user's number of positive items. Inside this project's
  processes the name ``GAUC`` means the impression-weighted value metric above
  (``metrics.register_metrics``).
* **LogLoss**: -mean_i [y_i log p_i + (1 - y_i) log(1 - p_i)], p clipped to [1e-15, 1 - 1e-15].
* **Bootstrap interval over users** (``bootstrap_auc_interval``): whole users are drawn with
  replacement (one user's rows are not independent); a drawn user's rows count as many times
  as it was drawn; the 2.5 % and 97.5 % quantiles of the resampled AUCs.
* **Paired bootstrap of an AUC difference** (``paired_bootstrap``): the same user draws are
  applied to both models' scores of the same rows, so the interval of AUC_a - AUC_b carries
  only the noise that does not cancel between them.
* **DeLong's test** (``delong``) of two correlated AUCs on the same rows (DeLong, DeLong and
  Clarke-Pearson 1988; the O(n log n) midrank form of Sun and Xu 2014): placement values
  V10_i = mean_{j in N} psi(s_i, s_j) for i in P and V01_j = mean_{i in P} psi(s_i, s_j) for
  j in N; AUC = mean V10 = mean V01; Var(AUC_a - AUC_b) = var(V10_a - V10_b) / |P| +
  var(V01_a - V01_b) / |N| (sample variances); z = (AUC_a - AUC_b) / sqrt(Var); two-sided
  p = erfc(|z| / sqrt 2). Rows are taken as independent (users are not), so DeLong's p is the
  optimistic one; the user bootstrap is the one the comparison marks noise by.
* **Challenge scores** (``challenge_score``; ``challenge.py`` says which actions and weights):
  score = sum_a w_a m_a / sum_a w_a over the challenge's actions a, m_a the action's metric on
  the test rows of the run trained on that action. WeChat Big Data Challenge 2021: m_a = UAUC
  (above; ``uauc_users`` also counts the users dropped for holding one class only), weights
  read_comment 4, like 3, click_avatar 2, forward 1 (round 1; round 2 adds favorite, comment and
  follow at 1), i.e. (4 m_rc + 3 m_like + 2 m_ca + m_fwd) / 10 in round 1. ICME 2019 (TikTok):
  m_a = global AUC, weights finish 0.7 and like 0.3 (they sum to 1, so the score is
  0.7 AUC(finish) + 0.3 AUC(like)).
* **Cold and warm** (``by_coldness``): the global AUC, GAUC and UAUC (and row counts) of the
  test rows whose item was seen in the training split (warm items), never seen (cold items),
  and whose user has no training row (cold users).
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import gauc, per_user_auc, uauc

COLDNESS_GROUPS = ("warm_items", "cold_items", "cold_users")


def _ranked(scores):
    """Sort order of the scores and where each run of tied scores starts (in sorted order)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return order, starts


def _auc_of_sorted(positive, weights, starts) -> float:
    """Weighted AUC from rows already in score order; within a tie group positives beat the
    negatives below it and tie the rest."""
    positives = np.add.reduceat(weights * positive, starts)
    negatives = np.add.reduceat(weights * ~positive, starts)
    negatives_below = np.cumsum(negatives) - negatives
    total_positive, total_negative = positives.sum(), negatives.sum()
    if total_positive == 0 or total_negative == 0:
        return float("nan")
    return float((positives * (negatives_below + 0.5 * negatives)).sum() / (total_positive * total_negative))


def weighted_auc(scores, labels, weights=None) -> float:
    """Global ROC AUC where row i counts ``weights[i]`` times; tied scores count one half."""
    order, starts = _ranked(scores)
    positive = (np.asarray(labels) > 0.5)[order]
    weights = np.ones(len(order)) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    return _auc_of_sorted(positive, weights, starts)


def logloss(probabilities, labels, eps: float = 1e-15) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def user_resamples(users, resamples: int, seed: int = 0):
    """Row weights of ``resamples`` bootstrap draws of whole users: a row counts as many times
    as its user was drawn (so no data is copied)."""
    _, codes = np.unique(np.asarray(users), return_inverse=True)
    codes = codes.reshape(-1)
    n_users = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.bincount(rng.integers(0, n_users, n_users), minlength=n_users)[codes].astype(np.float64)


def _interval(values, level: float):
    values = np.asarray([v for v in values if not np.isnan(v)])
    if not len(values):
        return [float("nan"), float("nan")], 0
    tail = (1 - level) / 2
    return [float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))], len(values)


def bootstrap_auc_interval(scores, labels, users, resamples: int, level: float = 0.95, seed: int = 0):
    """Percentile interval of the global AUC when whole users are resampled with replacement."""
    order, starts = _ranked(scores)
    positive = (np.asarray(labels) > 0.5)[order]
    users = np.asarray(users)[order]
    (low, high), _ = _interval([_auc_of_sorted(positive, w, starts) for w in user_resamples(users, resamples, seed)],
                               level)
    return low, high


def paired_bootstrap(scores_a, scores_b, labels, users, resamples: int, level: float = 0.95,
                     seed: int = 0) -> dict:
    """AUC_a - AUC_b on the same rows and its percentile interval over the same user draws."""
    labels = np.asarray(labels) > 0.5
    sorted_a, sorted_b = _ranked(scores_a), _ranked(scores_b)
    positive_a, positive_b = labels[sorted_a[0]], labels[sorted_b[0]]
    differences = []
    for weights in user_resamples(users, resamples, seed):
        differences.append(_auc_of_sorted(positive_a, weights[sorted_a[0]], sorted_a[1])
                           - _auc_of_sorted(positive_b, weights[sorted_b[0]], sorted_b[1]))
    interval, kept = _interval(differences, level)
    return {"difference": weighted_auc(scores_a, labels) - weighted_auc(scores_b, labels), "ci95": interval,
            "resamples": kept}


def _placements(scores, positive):
    """DeLong's placement values (V10 of the positives, V01 of the negatives) from midranks."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    x, y = scores[positive], scores[~positive]
    m, n = len(x), len(y)
    ranks = rankdata(np.r_[x, y])
    v10 = (ranks[:m] - rankdata(x)) / n          # negatives below each positive, ties one half
    v01 = 1.0 - (ranks[m:] - rankdata(y)) / m    # positives above each negative, ties one half
    return v10, v01


def delong(scores_a, scores_b, labels) -> dict:
    """DeLong's two-sided test that two scorings of the same rows have the same AUC."""
    positive = np.asarray(labels) > 0.5
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        return {"auc_a": float("nan"), "auc_b": float("nan"), "difference": float("nan"), "se": float("nan"),
                "z": float("nan"), "p_value": float("nan")}
    v10_a, v01_a = _placements(scores_a, positive)
    v10_b, v01_b = _placements(scores_b, positive)
    auc_a, auc_b = float(v10_a.mean()), float(v10_b.mean())
    difference = auc_a - auc_b
    variance = np.var(v10_a - v10_b, ddof=1) / m + np.var(v01_a - v01_b, ddof=1) / n
    se = math.sqrt(max(float(variance), 0.0))
    if se == 0.0:
        z, p = (0.0, 1.0) if abs(difference) < 1e-15 else (math.copysign(math.inf, difference), 0.0)
    else:
        z = difference / se
        p = math.erfc(abs(z) / math.sqrt(2.0))
    return {"auc_a": auc_a, "auc_b": auc_b, "difference": difference, "se": se, "z": z, "p_value": p}


def _number(value):
    value = float(value)
    return None if math.isnan(value) else value


def by_coldness(scores, labels, users, warm_item, warm_user) -> dict:
    """AUC, GAUC, UAUC, rows, positives and the users UAUC counted, for warm items, cold items
    and cold users; a metric is None where its group has no rows or only one class."""
    scores, labels, users = np.asarray(scores), np.asarray(labels) > 0.5, np.asarray(users)
    warm_item, warm_user = np.asarray(warm_item, dtype=bool), np.asarray(warm_user, dtype=bool)
    groups = {}
    for name, mask in zip(COLDNESS_GROUPS, (warm_item, ~warm_item, ~warm_user)):
        part = {"rows": int(mask.sum()), "positives": int(labels[mask].sum()), "auc": None, "gauc": None,
                "uauc": None, "users_with_both_classes": 0}
        if part["rows"]:
            s, y, u = scores[mask], labels[mask].astype(np.int8), users[mask]
            part.update(auc=_number(weighted_auc(s, y)), gauc=_number(gauc(s, y, u)), uauc=_number(uauc(s, y, u)),
                        users_with_both_classes=int(len(per_user_auc(s, y, u).users)))
        groups[name] = part
    return groups


def summarize(scores, labels, users, resamples: int, probabilities=True) -> dict:
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


def uauc_users(scores, labels, users) -> dict:
    """UAUC (the plain mean of per-user AUC over users whose rows hold both classes) with the
    users it counted and those it dropped (one class only), as the WeChat challenge scored it."""
    kept = per_user_auc(scores, labels, users)
    total = int(len(np.unique(np.asarray(users))))
    return {"uauc": float(kept.auc.mean()) if len(kept.users) else None, "users": total,
            "users_scored": int(len(kept.users)), "users_dropped": total - int(len(kept.users))}


def challenge_score(values: dict, weights: dict) -> float | None:
    """sum_a w_a values[a] / sum_a w_a over the actions of ``weights``; None when an action's value
    is missing or undefined (a test split where no user holds both classes)."""
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"challenge weights must have a positive sum, got {weights}")
    parts = [values.get(action) for action in weights]
    if any(part is None or math.isnan(float(part)) for part in parts):
        return None
    return float(sum(float(weights[action]) * float(values[action]) for action in weights) / total)
