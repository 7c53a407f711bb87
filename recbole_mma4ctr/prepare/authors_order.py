"""The authors' row order and device choice, from their Python sets (pure numpy; no RecBole).

Their script dedupes the ``(userid, feedid, label)`` triples of every ``user_action.csv`` row
through a Python ``set``, lists the set in its iteration order and groups that listing by user
(a dict of lists); each user's device is the ``(userid, device)`` pair that the set of all rows'
pairs lists last. ``recbole_mma4ctr/paper_split.py`` says how the split then uses this order.

Python's set order is deterministic for tuples of ints (their hash does not depend on
``PYTHONHASHSEED``); this is the order CPython >= 3.8 gives, the one their code gives when run
here. Their README names Python 3.7.12, whose tuple hash was different (3.8 changed it), so the
order of their own run differed; the rule (user-grouped rows, cut by position) is the same.
"""

from __future__ import annotations

import numpy as np


def set_order_positions(*columns: np.ndarray) -> np.ndarray:
    """Each row's position in the iteration order of a Python set filled with the rows' tuples in
    row order (the authors' ``set(tuple(j) for j in rows)``); duplicate rows share a position.

    Only distinct tuples are inserted, in order of first occurrence: inserting a key already
    present changes neither a set's table nor its resizing, so the iteration order is the same.
    """
    keys = np.stack([np.asarray(c, dtype=np.int64) for c in columns], axis=1)
    if not len(keys):
        return np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    by_occurrence = np.argsort(first, kind="stable")  # distinct tuples in first-occurrence order
    tuples = list(map(tuple, keys[first[by_occurrence]].tolist()))
    position_of = {key: index for index, key in enumerate(set(tuples))}
    positions = np.empty(len(first), dtype=np.int64)
    positions[by_occurrence] = np.fromiter((position_of[key] for key in tuples), dtype=np.int64, count=len(tuples))
    return positions[inverse.ravel()]


def authors_order(rows: np.ndarray, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``rows`` reordered as the authors list them: grouped by user, users in the order of their
    first set position, each user's rows by set position (ties, i.e. duplicates kept by
    ``dedupe: none``, in row order). ``users`` and ``positions`` are indexed by row."""
    rows = np.asarray(rows, dtype=np.int64)
    user, position = users[rows], positions[rows]
    _, codes = np.unique(user, return_inverse=True)
    first = np.full(codes.max() + 1 if len(codes) else 0, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, codes, position)
    return rows[np.lexsort((rows, position, first[codes]))]


def last_pair_device(users: np.ndarray, devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct users, each one's device) as the authors choose it: the ``(user, device)`` pair
    listed last in the set of all rows' pairs."""
    positions = set_order_positions(users, devices)
    order = np.argsort(positions, kind="stable")
    distinct, codes = np.unique(np.asarray(users)[order], return_inverse=True)
    last = np.zeros(len(distinct), dtype=np.int64)
    last[codes] = np.arange(len(order))  # later assignments win: the last listed pair
    return distinct, np.asarray(devices)[order][last]
