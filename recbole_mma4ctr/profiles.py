"""User multimodal profiles: the paper's user-side features, as pure numpy functions.

For each user and each modality (docs/protocols.md, "The paper's model and recipe"):

1. signed mean: add the modality vectors of positively-labelled items, subtract those of
   negatively-labelled items, divide by the number of interactions;
2. shorten to ``L`` values by a sliding-window average pool (window ``d - L + 1``, stride 1);
3. append the user's device (``L + 1`` values);
4. min-max scale every column over users.

What differs from the authors' code, on purpose: the interactions passed in are the TRAINING
split only, and the scaler is fitted on users that have training interactions. The authors used
all interactions, so test labels leaked into the features.

Cold start (documented behaviour): a user with no training interaction has no evidence, so the
signed mean is all zeros (neither liked nor disliked anything), and the device is the most
common device of the training interactions. The same fitted scaler is then applied.

Leave-one-out (``leave_one_out``): a training row's own label is inside its user's profile, so a
model trained on inclusive profiles learns a profile -> label map that is sharper than anything
it will see on valid/test rows (their labels are never in the profile). The leave-one-out
profile of a training row is the profile its user would have without that row. Because pooling
is linear and min-max scaling is affine per column, and the mean without the row is an affine
combination of the mean with it and the row's item vector (weights n/(n-1) and -1/(n-1), which
sum to 1), the correction can be made on the already scaled profile: ``(n z - q) / (n - 1)``
with ``q`` the row's signed pooled item vector through the SAME scaler. Nothing per training
row has to be stored: a per-user count and a per-item pooled vector are enough.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def label_signs(labels) -> np.ndarray:
    """+1 for a positive label (> 0.5), -1 otherwise: how an item vector enters a profile."""
    return np.where(np.asarray(labels) > 0.5, 1.0, -1.0)


def signed_mean(user_index, item_index, labels, item_matrix: np.ndarray, n_users: int):
    """Per-user (sum of positive item vectors - sum of negative ones) / number of interactions.

    Interactions are given as aligned arrays of user rows, item rows (into ``item_matrix``) and
    labels. The sum is taken as a sparse (users x items) matrix of signed counts times the item
    matrix, so 7 M interactions never become a 7 M-row dense array. Returns (profiles
    [n_users, d], counts [n_users]); users without interactions get a zero row and count 0.
    """
    from scipy import sparse

    user_index = np.asarray(user_index, dtype=np.int64)
    item_index = np.asarray(item_index, dtype=np.int64)
    signs = label_signs(labels)
    item_matrix = np.asarray(item_matrix, dtype=np.float64)
    signed_counts = sparse.csr_matrix(
        (signs, (user_index, item_index)), shape=(n_users, item_matrix.shape[0])
    )
    sums = np.asarray(signed_counts @ item_matrix)
    counts = np.bincount(user_index, minlength=n_users)
    return sums / np.maximum(counts, 1)[:, None], counts


POOL_ROWS = 1 << 14  # rows pooled at once: bounds the float64 running sums (WeChat's 97 k items x 199 values)


def average_pool(matrix: np.ndarray, length: int) -> np.ndarray:
    """Sliding-window average pool of each row down to ``length`` values (window d - length + 1).

    ``length`` 0 gives an empty row. The paper's window can only shorten; a row shorter than
    ``length`` (TikTok's 10-d acoustic modality with L = 21) is stretched by adaptive average
    pooling instead (output i averages columns floor(i*d/L) .. ceil((i+1)*d/L) - 1, PyTorch's
    AdaptiveAvgPool1d rule), which repeats values and invents nothing.

    Rows are pooled ``POOL_ROWS`` at a time (each row on its own, so the result is the same):
    the float64 copy and running sums of a whole item matrix were several hundred MB.
    """
    matrix = np.asarray(matrix)
    rows, width = matrix.shape
    if length < 0:
        raise ValueError(f"profile length must be >= 0, got {length}")
    if length == 0:
        return np.zeros((rows, 0))
    if width == 0:
        raise ValueError("cannot pool an empty vector")
    if length > width:
        starts = (np.arange(length) * width) // length
        ends = -((-(np.arange(length) + 1) * width) // length)
    else:
        window = width - length + 1
        starts, ends = np.arange(length), np.arange(length) + window
    pooled = np.empty((rows, length))
    for first in range(0, rows, POOL_ROWS):
        part = np.asarray(matrix[first:first + POOL_ROWS], dtype=np.float64)
        cumulative = np.concatenate([np.zeros((part.shape[0], 1)), np.cumsum(part, axis=1)], axis=1)
        pooled[first:first + POOL_ROWS] = (cumulative[:, ends] - cumulative[:, starts]) / (ends - starts)
    return pooled


def modal_value(user_index: np.ndarray, values: np.ndarray, n_users: int, default: float) -> np.ndarray:
    """Each user's most frequent value (ties: the smallest), ``default`` for users without rows."""
    user_index = np.asarray(user_index, dtype=np.int64)
    values = np.asarray(values)
    result = np.full(n_users, default, dtype=np.float64)
    if len(values) == 0:
        return result
    distinct, codes = np.unique(values, return_inverse=True)
    table = np.zeros((n_users, len(distinct)), dtype=np.int64)
    np.add.at(table, (user_index, codes), 1)
    seen = table.sum(axis=1) > 0
    result[seen] = distinct[table[seen].argmax(axis=1)]
    return result


def most_common(values: np.ndarray, default: float = 0.0) -> float:
    values = np.asarray(values)
    if len(values) == 0:
        return default
    distinct, counts = np.unique(values, return_counts=True)
    return float(distinct[counts.argmax()])


def fit_minmax(matrix: np.ndarray):
    """Column minima and spans of ``matrix`` (the users a scaler is fitted on)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape[0] == 0:
        return np.zeros(matrix.shape[1]), np.ones(matrix.shape[1])
    low = matrix.min(axis=0)
    span = matrix.max(axis=0) - low
    return low, span


def apply_minmax(matrix: np.ndarray, low: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Scale with a fitted scaler; a constant column (span 0) maps to 0."""
    safe = np.where(span > 0, span, 1.0)
    scaled = (np.asarray(matrix, dtype=np.float64) - low) / safe
    scaled[:, span <= 0] = 0.0
    return scaled


class FittedProfiles(NamedTuple):
    """One modality's profiles plus what leave-one-out needs: counts and the fitted scaler."""

    profiles: np.ndarray  # [n_users, length + 1] float32, scaled
    counts: np.ndarray  # [n_users] interactions behind each profile
    low: np.ndarray  # [length + 1] column minima of the raw profiles (users with interactions)
    span: np.ndarray  # [length + 1] column max - min


def raw_profiles(user_index, item_index, labels, item_matrix, n_users: int, length: int, devices=None):
    """Unscaled profiles [n_users, length + 1] (pooled signed mean, then device) and counts.

    ``devices`` holds each interaction's device (None: a constant 0 column, for datasets
    without one); users without interactions get the most common device.
    """
    means, counts = signed_mean(user_index, item_index, labels, item_matrix, n_users)
    pooled = average_pool(means, length)
    if devices is None:
        device_column = np.zeros(n_users)
    else:
        device_column = modal_value(user_index, devices, n_users, default=most_common(devices))
    return np.hstack([pooled, device_column[:, None]]), counts


def fit_user_profiles(user_index, item_index, labels, item_matrix, n_users: int, length: int,
                      devices=None) -> FittedProfiles:
    """Scaled profiles with the scaler fitted on users with at least one interaction."""
    raw, counts = raw_profiles(user_index, item_index, labels, item_matrix, n_users, length, devices)
    low, span = fit_minmax(raw[counts > 0])
    return FittedProfiles(apply_minmax(raw, low, span).astype(np.float32), counts, low, span)


def user_profiles(
    user_index: np.ndarray,
    item_index: np.ndarray,
    labels: np.ndarray,
    item_matrix: np.ndarray,
    n_users: int,
    length: int,
    devices: np.ndarray | None = None,
) -> np.ndarray:
    """One modality's scaled profiles [n_users, length + 1] from training interactions.

    ``devices`` holds each interaction's device (None: a constant 0 column, for datasets
    without one). Scaling is fitted on users with at least one interaction.
    """
    return fit_user_profiles(user_index, item_index, labels, item_matrix, n_users, length, devices).profiles


def removal_terms(item_matrix: np.ndarray, length: int, low: np.ndarray, span: np.ndarray):
    """What taking one interaction out of a scaled profile needs, per item and for no evidence.

    Returns (positive, negative, cold): each item's pooled vector signed +1 and -1 and put
    through the profile scaler's first ``length`` columns ([n_items, length] float32 each, the
    ``q`` of ``leave_one_out``), and the scaled zero mean ([length], the cold-start columns).
    For WeChat's 100 k items and L = 21 that is a few MB per modality; a per-training-row copy of
    the profiles would be GBs.
    """
    pooled = average_pool(item_matrix, length)
    low, span = np.asarray(low)[:length], np.asarray(span)[:length]
    positive = apply_minmax(pooled, low, span).astype(np.float32)
    negative = apply_minmax(-pooled, low, span).astype(np.float32)
    cold = apply_minmax(np.zeros((1, length)), low, span)[0]
    return positive, negative, cold


def leave_one_out(profiles: np.ndarray, counts: np.ndarray, removed: np.ndarray, cold: np.ndarray,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Scaled signed-mean columns of rows' users with each row's own interaction taken out.

    ``profiles`` [rows, L]: the users' scaled (inclusive) pooled columns; ``counts`` [rows]: the
    users' interaction counts n, the row included; ``removed`` [rows, L]: the row's signed pooled
    item vector through the same scaler (``removal_terms``); ``cold`` [L]: the scaled zero
    mean. Result: ``(n z - q) / (n - 1)``, which equals scaling the pooled mean of the other
    n - 1 interactions; a user whose only interaction is this row (n = 1) has no other evidence
    and gets the cold-start columns. Constant columns stay 0 (z, q and cold are all 0 there).

    Computed in float64 in one buffer (``out``, float64 [rows, L], when given), operation after
    operation in place (the same IEEE operations as the formula written out): it runs on every
    training batch, where each extra [batch, L] temporary costs fresh pages from the allocator.
    """
    n = np.asarray(counts, dtype=np.float64)[:, None]
    others = np.multiply(profiles, n, out=out, dtype=np.float64)
    others -= removed
    others /= np.maximum(n - 1, 1)
    others[n[:, 0] <= 1] = cold
    return others
