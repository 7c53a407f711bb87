"""The statistics of this project, each formula stated once: one global AUC, the per-user AUCs,
LogLoss, the bootstrap intervals, DeLong's test, the challenge scores.

Pure numpy (and ``scipy.stats.rankdata``); ``metrics.py`` adapts the per-user AUCs to RecBole's
evaluator for training and validation. The comparison applies these to every model's saved
test predictions (score, label, user of each test pair), after training and without RecBole, so
intervals, tests and cold/warm splits are computed the same way for every model.

Notation: test rows i with label y_i in {0, 1}, score s_i and user u_i; P the positive rows, N
the negative rows; psi(a, b) = 1 if a > b, 1/2 if a = b, 0 otherwise.

* **Global AUC** (``weighted_auc``): AUC = sum_{i in P} sum_{j in N} psi(s_i, s_j) / (|P| |N|),
  over all test rows at once; with row weights w, each pair counts w_i w_j.
* **Per-user AUC** (``per_user_auc``): the AUC of each user whose rows hold both classes, ties
  sharing the average rank as ``sklearn.metrics.roc_auc_score`` does.
* **GAUC** (``gauc``), impression-weighted as FuxiCTR / BARS: GAUC = sum_u n_u AUC_u /
  sum_u n_u, where AUC_u is the AUC of user u's rows alone and n_u the user's number of rows,
  over users whose rows hold both classes.
* **UAUC** (``uauc``), the plain mean as the WeChat Big Data Challenge 2021 scored it:
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
* **Bootstrap of challenge scores over users** (``challenge_score_resamples``): whole users are
  drawn with replacement, the same draws for every action and every model scored on the same
  rows; in a draw, UAUC_a = sum_u c_u AUC_a,u / sum_u c_u over the users kept for action a (c_u
  the times user u was drawn), global AUC with row weights c_u; the score is the formula above on
  those values. Intervals are the 2.5 % and 97.5 % quantiles; a paired difference of two models'
  scores uses the same draws for both.
* **Cold and warm** (``by_coldness``): the global AUC, GAUC and UAUC (and row counts) of the
  test rows whose item was seen in the training split (warm items), never seen (cold items),
  and whose user has no training row (cold users).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

COLDNESS_GROUPS = ("warm_items", "cold_items", "cold_users")

# Largest non-negative value an int64 sort key may hold is 2**63 - 1, so at most 63 bits.
_KEY_BITS = 63
# User codes of up to 30 bits leave room for a 32-bit score code and the label bit.
_MAX_USER_BITS_FAST = 30


class PerUserAUC(NamedTuple):
    """Result of :func:`per_user_auc`; unpacks as ``users, auc, n_rows``."""

    users: np.ndarray  #: ids of the qualifying users, ascending
    auc: np.ndarray  #: float64 ROC AUC of each of those users
    n_rows: np.ndarray  #: int64 number of rows (impressions) of each of those users




def _as_1d(name, values):
    arr = np.asarray(values)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _binary_labels(labels):
    """Boolean positives of a 0/1 label array; anything else is rejected like sklearn does."""
    positive = labels == 1
    n_negative = np.count_nonzero(labels == 0)
    if np.count_nonzero(positive) + n_negative != labels.shape[0]:
        raise ValueError("labels must be binary (0 or 1)")
    return positive


def _user_codes(user_ids):
    """Map user ids to non-negative int64 codes that keep their order.

    Returns ``(codes, decode)``: ``codes`` is a fresh array (the caller may modify it) and
    ``decode(codes_subset)`` gives back the original ids. Integer ids spanning a small range
    are only shifted (no sort); anything else goes through ``np.unique``.
    """
    if user_ids.dtype.kind in "iu":
        low, high = int(user_ids.min()), int(user_ids.max())
        if high - low < (1 << _MAX_USER_BITS_FAST) and high < (1 << 63):
            codes = user_ids.astype(np.int64)  # a copy, also for int64 input
            codes -= low
            dtype = user_ids.dtype

            def decode(sub):
                return (sub + low).astype(dtype)

            return codes, decode
    uniques, codes = np.unique(user_ids, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    return codes, lambda sub: uniques[sub]


def _dense_score_codes(scores):
    _, dense = np.unique(scores, return_inverse=True)
    return dense.reshape(-1).astype(np.int64)


def _score_codes(scores):
    """Map scores to non-negative int64 codes that are equal exactly when the scores are equal
    and ordered like the scores. Returns ``(codes, is_dense_rank)``.

    Scores exactly representable in float32 (the usual model output) get their order-preserving
    bit pattern, with no sort; other scores get their dense rank.
    """
    if scores.dtype.kind == "f" and scores.dtype.itemsize <= 4:
        as32 = scores.astype(np.float32, copy=False)
        if np.isnan(as32).any():
            raise ValueError("scores contain NaN")
    else:
        as64 = scores.astype(np.float64, copy=False)
        if np.isnan(as64).any():
            raise ValueError("scores contain NaN")
        with np.errstate(over="ignore", invalid="ignore"):
            as32 = as64.astype(np.float32)
            exact = np.array_equal(as32.astype(np.float64), as64)
        if not exact:
            return _dense_score_codes(as64), True
    # -0.0 + 0.0 == +0.0, so both zeros get one bit pattern (and the input is not modified).
    bits = (as32 + np.float32(0.0)).view(np.int32)
    # Classic sortable-float trick: flipping the 31 low bits of negatives makes the signed
    # integer order of the bit patterns the numeric order of the floats.
    flip = bits >> 31
    flip &= 0x7FFFFFFF
    flip ^= bits
    codes = flip.astype(np.int64)
    codes -= codes.min()
    return codes, False


def _sorted_keys(user_codes, scores, positive):
    """Sorted int64 keys ``user | score | label`` (one per row) and the bit offset of the user.

    A plain in-place value sort of one int64 array is much faster than an argsort or lexsort,
    and the sorted keys carry everything :func:`per_user_auc` needs. Inside a block of tied
    scores of one user the label bit puts the negatives first.
    """
    n = user_codes.shape[0]
    score_codes, dense = _score_codes(scores)
    user_bits = int(user_codes.max()).bit_length()
    score_bits = int(score_codes.max()).bit_length()
    if user_bits + score_bits + 1 > _KEY_BITS and not dense:
        score_codes = _dense_score_codes(scores)
        score_bits = int(score_codes.max()).bit_length()
    if user_bits + score_bits + 1 > _KEY_BITS:
        raise ValueError(f"too many rows ({n}) for a 63-bit (user, score, label) sort key")
    shift = score_bits + 1
    key = user_codes  # owned by us: shifted in place
    key <<= shift
    score_codes <<= 1
    score_codes |= positive
    key |= score_codes
    del score_codes
    key.sort()
    return key, shift


def per_user_auc(scores, labels, user_ids):
    """ROC AUC of each user whose labels contain both classes.

    Rows are sorted once by (user, score) and ranked inside each user; tied scores share their
    average rank, so each user's value equals ``sklearn.metrics.roc_auc_score`` on that user's
    rows. AUC is the Mann-Whitney statistic ``(R_pos - P(P+1)/2) / (P N)``, ``R_pos`` the rank
    sum of the user's ``P`` positives among its ``P + N`` rows. Fully vectorised: no Python loop
    over users (10 million rows take a couple of seconds).

    Args:
        scores: 1-D predicted scores (any real dtype; NaN is rejected).
        labels: 1-D binary labels (0/1, int, float or bool).
        user_ids: 1-D user ids (ints, strings, ...), same length.

    Returns:
        PerUserAUC: ``(users, auc, n_rows)`` for the qualifying users, sorted by user id.
    """
    scores = _as_1d("scores", scores)
    labels = _as_1d("labels", labels)
    user_ids = _as_1d("user_ids", user_ids)
    n = scores.shape[0]
    if labels.shape[0] != n or user_ids.shape[0] != n:
        raise ValueError(
            "scores, labels and user_ids must have the same length, got "
            f"{n}, {labels.shape[0]} and {user_ids.shape[0]}"
        )
    if n == 0:
        return PerUserAUC(user_ids[:0], np.empty(0, np.float64), np.empty(0, np.int64))

    positive = _binary_labels(labels)
    user_codes, decode = _user_codes(user_ids)
    key, shift = _sorted_keys(user_codes, scores, positive)

    # One scratch buffer for the row-sized temporaries (fresh large arrays are costly).
    scratch = np.empty(n, dtype=np.int64)
    flags = np.empty(n - 1, dtype=bool)

    np.bitwise_and(key, 1, out=scratch)
    pos_rows = np.flatnonzero(scratch)  # sorted positions of the positives

    diff = scratch[: n - 1]
    np.bitwise_xor(key[1:], key[:-1], out=diff)
    np.greater_equal(diff, 1 << shift, out=flags)  # the user changes after this row
    bounds = np.concatenate(([0], np.flatnonzero(flags) + 1, [n]))
    user_start = bounds[:-1]
    n_rows = np.diff(bounds)
    # Blocks of tied scores holding both classes: negatives then positives, so the key only
    # changes in its label bit between the last negative and the first positive.
    np.equal(diff, 1, out=flags)
    mixed_last_neg = np.flatnonzero(flags)
    del scratch, diff, flags

    # Positives of one user are a contiguous run of pos_rows.
    pos_bounds = np.searchsorted(pos_rows, bounds)
    n_pos = np.diff(pos_bounds)
    pos_cumsum = np.zeros(pos_rows.shape[0] + 1, dtype=np.int64)
    np.cumsum(pos_rows, out=pos_cumsum[1:])
    # Sum of the 1-based positions of the positives inside their user, ties not yet averaged.
    rank_sum = (pos_cumsum[pos_bounds[1:]] - pos_cumsum[pos_bounds[:-1]]).astype(np.float64)
    rank_sum += n_pos * (1.0 - user_start)

    if mixed_last_neg.shape[0]:
        # Averaging a tie block's ranks moves each positive down by half the block's negatives:
        # subtract 0.5 per tied (positive, negative) pair.
        first_pos = mixed_last_neg + 1
        block_start = np.searchsorted(key, key[mixed_last_neg], side="left")
        block_end = np.searchsorted(key, key[first_pos], side="right")
        tied_pairs = (first_pos - block_start) * (block_end - first_pos)
        block_user = np.searchsorted(user_start, mixed_last_neg, side="right") - 1
        rank_sum -= 0.5 * np.bincount(
            block_user, weights=tied_pairs, minlength=user_start.shape[0]
        )

    n_neg = n_rows - n_pos
    keep = (n_pos > 0) & (n_neg > 0)
    p = n_pos[keep].astype(np.float64)
    auc = (rank_sum[keep] - p * (p + 1.0) * 0.5) / (p * n_neg[keep])
    users = decode(key[user_start[keep]] >> shift)
    return PerUserAUC(users, auc, n_rows[keep].astype(np.int64))


def gauc(scores, labels, user_ids):
    """GAUC: per-user AUC weighted by each user's number of rows (impressions).

    ``sum_u n_u * AUC_u / sum_u n_u`` over users having both classes (BARS / FuxiCTR); nan when
    no user qualifies.
    """
    _, auc, n_rows = per_user_auc(scores, labels, user_ids)
    if auc.shape[0] == 0:
        return float("nan")
    return float(np.dot(auc, n_rows) / n_rows.sum())


def uauc(scores, labels, user_ids):
    """UAUC: unweighted mean of per-user AUC over users having both classes (WeChat Big Data
    Challenge 2021); nan when no user qualifies."""
    _, auc, _ = per_user_auc(scores, labels, user_ids)
    if auc.shape[0] == 0:
        return float("nan")
    return float(auc.mean())


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


def predictions_by_coldness(predictions: dict | None) -> dict | None:
    """:func:`by_coldness` of a run's saved test predictions (a record's ``test_by_coldness``);
    None without them or without their ``warm_item`` / ``warm_user`` columns."""
    if not predictions or "warm_item" not in predictions or "warm_user" not in predictions:
        return None
    return by_coldness(predictions["score"], predictions["label"], predictions["user"],
                       predictions["warm_item"], predictions["warm_user"])


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


def challenge_score_resamples(entries, metric: str, weights: dict, resamples: int, seed: int = 0) -> np.ndarray:
    """``[len(entries), resamples]`` challenge scores of whole-user bootstrap draws, the same draws
    for every entry (``entries``: per model, action -> {"score", "label", "user"}); NaN where a
    draw leaves an action without a scored user."""
    users = np.unique(np.concatenate([np.asarray(p["user"]).astype(str) for entry in entries for p in entry.values()]))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(users), len(users)), minlength=len(users))
                       for _ in range(resamples)]).astype(np.float64)                     # [resamples, users]
    total = float(sum(weights.values()))
    out = np.zeros((len(entries), resamples))
    for row, entry in enumerate(entries):
        for action, weight in weights.items():
            scores, labels, owners = entry[action]["score"], entry[action]["label"], np.asarray(entry[action]["user"])
            if metric == "uauc":
                kept = per_user_auc(scores, labels, owners)
                drawn = counts[:, np.searchsorted(users, np.asarray(kept.users).astype(str))]
                with np.errstate(invalid="ignore", divide="ignore"):
                    values = (drawn * kept.auc).sum(axis=1) / drawn.sum(axis=1)
            else:
                codes = np.searchsorted(users, owners.astype(str))
                values = np.array([weighted_auc(scores, labels, draw[codes]) for draw in counts])
            out[row] += weight * values / total
    return out
