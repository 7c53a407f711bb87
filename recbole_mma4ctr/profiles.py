"""User multimodal profiles: the paper's user-side features, as pure numpy functions.

For each user and each modality (DATA.md, "User multimodal profile"):

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
"""

from __future__ import annotations

import numpy as np


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
    signs = np.where(np.asarray(labels) > 0.5, 1.0, -1.0)
    item_matrix = np.asarray(item_matrix, dtype=np.float64)
    signed_counts = sparse.csr_matrix(
        (signs, (user_index, item_index)), shape=(n_users, item_matrix.shape[0])
    )
    sums = np.asarray(signed_counts @ item_matrix)
    counts = np.bincount(user_index, minlength=n_users)
    return sums / np.maximum(counts, 1)[:, None], counts


def average_pool(matrix: np.ndarray, length: int) -> np.ndarray:
    """Sliding-window average pool of each row down to ``length`` values (window d - length + 1).

    ``length`` 0 gives an empty row. The paper's window can only shorten; a row shorter than
    ``length`` (TikTok's 10-d acoustic modality with L = 21) is stretched by adaptive average
    pooling instead (output i averages columns floor(i*d/L) .. ceil((i+1)*d/L) - 1, PyTorch's
    AdaptiveAvgPool1d rule), which repeats values and invents nothing.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    width = matrix.shape[1]
    if length < 0:
        raise ValueError(f"profile length must be >= 0, got {length}")
    if length == 0:
        return np.zeros((matrix.shape[0], 0))
    if width == 0:
        raise ValueError("cannot pool an empty vector")
    if length > width:
        starts = (np.arange(length) * width) // length
        ends = -((-(np.arange(length) + 1) * width) // length)
        cumulative = np.concatenate([np.zeros((matrix.shape[0], 1)), np.cumsum(matrix, axis=1)], axis=1)
        return (cumulative[:, ends] - cumulative[:, starts]) / (ends - starts)
    window = width - length + 1
    cumulative = np.concatenate([np.zeros((matrix.shape[0], 1)), np.cumsum(matrix, axis=1)], axis=1)
    return (cumulative[:, window:] - cumulative[:, :-window]) / window


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
    means, counts = signed_mean(user_index, item_index, labels, item_matrix, n_users)
    pooled = average_pool(means, length)
    if devices is None:
        device_column = np.zeros(n_users)
    else:
        device_column = modal_value(user_index, devices, n_users, default=most_common(devices))
    raw = np.hstack([pooled, device_column[:, None]])
    low, span = fit_minmax(raw[counts > 0])
    return apply_minmax(raw, low, span).astype(np.float32)
