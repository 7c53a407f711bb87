"""Per-user AUC metrics (GAUC, UAUC) as pure numpy functions and as RecBole metrics.

Pure part (numpy only, importing this module does not import RecBole or torch):

* :func:`per_user_auc` -- ROC AUC of every user whose labels contain both classes, ties in the
  scores sharing the average rank exactly as ``sklearn.metrics.roc_auc_score`` does.
* :func:`gauc` -- per-user AUC averaged with impression weights (the number of rows of the
  user), the GAUC that BARS / FuxiCTR report.
* :func:`uauc` -- plain mean of the per-user AUC, as the WeChat Big Data Challenge 2021 scored it.

Users whose labels are all one class are skipped; when no user qualifies the result is nan.

RecBole part (RecBole is imported lazily, on first use):

* ``GAUC`` and ``UAUC`` -- ``recbole.evaluator.AbstractMetric`` subclasses of type
  ``EvaluatorType.VALUE`` (bigger is better), result keys ``'gauc'`` and ``'uauc'``.
* ``UserAwareCollector(config)`` -- RecBole's ``Collector`` that also gathers the user id of
  every evaluated row under :data:`UID_KEY` when a configured metric needs it.
* :func:`register_metrics` -- makes RecBole's Config, Register (Collector) and Evaluator know
  the two metrics; call it before building ``Config``. :func:`unregister_metrics` undoes it.

Note that RecBole 1.2.1 already ships a metric named ``GAUC``: a *ranking* metric computed
from full-sort / sampled ranks and weighted by each user's number of positive items. After
:func:`register_metrics` the name ``'GAUC'`` means the value-based metric of this module for the
whole process, so it can be combined with ``AUC`` and ``LogLoss`` in labeled evaluation.
"""

from typing import NamedTuple

import numpy as np

__all__ = [
    "PerUserAUC",
    "UID_KEY",
    "per_user_auc",
    "gauc",
    "uauc",
    "register_metrics",
    "unregister_metrics",
    "GAUC",
    "UAUC",
    "UserAwareCollector",
]

#: Key under which :class:`UserAwareCollector` stores the user id of each evaluated row.
UID_KEY = "data.uid"

# Largest non-negative value an int64 sort key may hold is 2**63 - 1, so at most 63 bits.
_KEY_BITS = 63
# User codes of up to 30 bits leave room for a 32-bit score code and the label bit.
_MAX_USER_BITS_FAST = 30


class PerUserAUC(NamedTuple):
    """Result of :func:`per_user_auc`; unpacks as ``users, auc, n_rows``."""

    users: np.ndarray  #: ids of the qualifying users, ascending
    auc: np.ndarray  #: float64 ROC AUC of each of those users
    n_rows: np.ndarray  #: int64 number of rows (impressions) of each of those users


# ---------------------------------------------------------------------------------------------
# pure numpy part
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# RecBole part (lazy)
# ---------------------------------------------------------------------------------------------

_RECBOLE_NAMES = ("GAUC", "UAUC", "UserAwareCollector")
_classes = None
# RecBole's registry entries that register_metrics() replaced, for unregister_metrics().
_replaced = None


def _recbole_classes():
    """Build (once) the RecBole-facing classes; this is where RecBole gets imported."""
    global _classes
    if _classes is not None:
        return _classes

    from recbole.evaluator.base_metric import AbstractMetric
    from recbole.evaluator.collector import Collector
    from recbole.utils import EvaluatorType

    class _PerUserAUCMetric(AbstractMetric):
        metric_type = EvaluatorType.VALUE
        metric_need = ["rec.score", "data.label", UID_KEY]
        smaller = False
        key = None

        @staticmethod
        def reduce(scores, labels, user_ids):
            raise NotImplementedError

        def calculate_metric(self, dataobject):
            if UID_KEY not in dataobject:
                raise RuntimeError(
                    f"metric '{self.key}' needs the user id of every evaluated row ('{UID_KEY}'), "
                    "which RecBole's Collector does not gather: use "
                    "recbole_mma4ctr.metrics.UserAwareCollector as the trainer's eval_collector"
                )
            scores = dataobject.get("rec.score").reshape(-1).numpy()
            labels = dataobject.get("data.label").reshape(-1).numpy()
            user_ids = dataobject.get(UID_KEY).reshape(-1).numpy()
            value = self.reduce(scores, labels, user_ids)
            return {self.key: round(value, self.decimal_place)}

    class GAUC(_PerUserAUCMetric):
        """Value-based GAUC: per-user AUC weighted by the user's number of rows."""

        key = "gauc"
        reduce = staticmethod(gauc)

    class UAUC(_PerUserAUCMetric):
        """Value-based UAUC: unweighted mean of per-user AUC."""

        key = "uauc"
        reduce = staticmethod(uauc)

    class UserAwareCollector(Collector):
        """RecBole ``Collector`` that also collects ``interaction[config['USER_ID_FIELD']]``
        of every evaluated row under :data:`UID_KEY` when a configured metric needs it.

        Everything else is RecBole's. Wire it in with ``trainer.eval_collector =
        UserAwareCollector(config)`` (after ``Trainer.__init__``, before ``fit``/``evaluate``).
        """

        def __init__(self, config):
            super().__init__(config)
            self.uid_field = config["USER_ID_FIELD"]

        def eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i):
            super().eval_batch_collect(scores_tensor, interaction, positive_u, positive_i)
            if self.register.need(UID_KEY):
                if self.uid_field is None or self.uid_field not in interaction:
                    raise KeyError(
                        f"user id field {self.uid_field!r} (USER_ID_FIELD) is not in the "
                        "evaluated interaction; GAUC/UAUC need it"
                    )
                self.data_struct.update_tensor(
                    UID_KEY, interaction[self.uid_field].to(self.device)
                )

        def eval_collect(self, eval_pred, data_label, user_ids=None):
            """Whole-set variant (used by RecBole's tree-model trainers); pass ``user_ids``
            when GAUC/UAUC are configured."""
            super().eval_collect(eval_pred, data_label)
            if self.register.need(UID_KEY) and user_ids is not None:
                import torch

                self.data_struct.update_tensor(
                    UID_KEY, torch.as_tensor(user_ids).to(self.device)
                )

        def get_data_struct(self):
            returned = super().get_data_struct()
            # RecBole only resets its own per-evaluation keys; without this the user ids of
            # every evaluation would pile up.
            if UID_KEY in self.data_struct:
                del self.data_struct[UID_KEY]
            return returned

    for cls in (GAUC, UAUC, UserAwareCollector):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    _classes = {"GAUC": GAUC, "UAUC": UAUC, "UserAwareCollector": UserAwareCollector}
    return _classes


def __getattr__(name):
    # PEP 562: ``from recbole_mma4ctr.metrics import GAUC`` imports RecBole only then.
    if name in _RECBOLE_NAMES:
        return _recbole_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_metrics():
    """Make RecBole know the metrics ``GAUC`` and ``UAUC`` (idempotent).

    RecBole fills ``recbole.evaluator.register``'s ``metrics_dict`` (used by ``Evaluator``),
    ``metric_information`` (used by ``Register``, i.e. the ``Collector``), ``metric_types``
    (used by ``Config`` to accept the names and derive ``eval_type``) and ``smaller_metrics``
    (used by ``Config`` for ``valid_metric_bigger``) once, at import time, and
    ``recbole.config.configurator`` holds references to the same objects. They are updated in
    place here, so call this before creating ``Config``/``Trainer``; it overrides RecBole's own
    ranking ``GAUC`` for the process (and must be repeated in spawned worker processes).

    Returns:
        dict: ``{'gauc': GAUC, 'uauc': UAUC}``.
    """
    global _replaced
    from recbole.evaluator import register as rb_register

    classes = _recbole_classes()
    new = {"gauc": classes["GAUC"], "uauc": classes["UAUC"]}
    if _replaced is None:
        _replaced = {
            name: (
                rb_register.metrics_dict.get(name),
                rb_register.metric_information.get(name),
                rb_register.metric_types.get(name),
                name in rb_register.smaller_metrics,
            )
            for name in new
        }
    for name, cls in new.items():
        rb_register.metrics_dict[name] = cls
        rb_register.metric_information[name] = cls.metric_need
        rb_register.metric_types[name] = cls.metric_type
        while name in rb_register.smaller_metrics:
            rb_register.smaller_metrics.remove(name)
    return new


def unregister_metrics():
    """Undo :func:`register_metrics`, restoring RecBole's registry (its ranking ``GAUC``)."""
    global _replaced
    if _replaced is None:
        return
    from recbole.evaluator import register as rb_register

    tables = (rb_register.metrics_dict, rb_register.metric_information, rb_register.metric_types)
    for name, (cls, need, mtype, smaller) in _replaced.items():
        for table, old in zip(tables, (cls, need, mtype)):
            if old is None:
                table.pop(name, None)
            else:
                table[name] = old
        if smaller and name not in rb_register.smaller_metrics:
            rb_register.smaller_metrics.append(name)
    _replaced = None
