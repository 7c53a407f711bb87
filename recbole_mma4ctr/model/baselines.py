"""What RecBole's baselines need to run on MMa4CTR's labeled split, and nothing they compute.

RecBole's ``SequentialDataset`` does two things that would give the sequential baselines
(FPMC, BERT4Rec, GCSAN, DIN, DIEN) a different split from every other model:

1. it drops each user's first interaction (a row with no history), so the 8:1:1 cut points fall
   on different rows;
2. it re-sorts the interactions by (user, time) before the chronological sort of the split, so
   rows with equal timestamps end up in a different order than in the plain ``Dataset``.

:class:`LabeledSequentialDataset` keeps every interaction, in the order it was read, and gives
each row the history RecBole would give it: up to ``MAX_ITEM_LIST_LENGTH`` of that user's
earlier interactions (earlier in the same stable time order the split uses), oldest first,
zero-padded on the right. RecBole's own ``build`` then sorts and splits exactly as it does for
the plain ``Dataset``, so every model scores the same test rows. A row without history gets an
all-padding list and ``item_length`` = ``empty_history_length``: 0 for DIN, whose attention
masks by length; 1 (one padding item, embedding row 0) for the models that read position
``item_length - 1`` (FPMC, GCSAN, BERT4Rec, DIEN) and would fail on 0. Only ``item_id_list``
and ``item_length`` are built (RecBole also builds a ``<field>_list`` of every other
interaction column, labels included, which none of these models reads).

The lists are built per batch, not stored per row (issue 22): RecBole keeps a
``[rows, MAX_ITEM_LIST_LENGTH]`` int64 list per row (2.8 GB for WeChat's 7 M rows at 50, and
again in the splits it copies). Here the interactions are put once in per-user chronological
order (``chronological_order``); the dataset keeps each position's item (and DIEN's negative)
and its history length, and every row only its position (the hidden column
``HISTORY_POSITION``, which follows the row through RecBole's sort and split). ``__getitem__``
turns a batch's positions into the lists (``history_lists``): the same tensors, value for value
and dtype for dtype, that the stored lists gave.

:class:`LabeledDIENDataset` adds DIEN's ``neg_item_id_list``: one uniformly drawn item
(never the row's own item) per interaction, gathered along the same history.

:class:`GCSAN` is RecBole's GCSAN with its per-session graph construction (``_get_slice``, a
Python loop over every sequence of every batch) vectorised in torch; the tensors it returns
are identical (tests compare them), so the model computes the same thing, faster.
``gcsan_fast_graph: False`` restores RecBole's loop.

:func:`switch_off_anomaly_detection`: importing any RecBole sequential model imports
``recbole/model/sequential_recommender/sine.py``, which calls
``torch.autograd.set_detect_anomaly(True)`` for the whole process. Anomaly mode computes
nothing different; it checks every backward result for NaN (``ne`` + ``any`` over every
activation gradient) and records a traceback for every forward op, which made half of the
sequential baselines' CPU time. It is switched off again after every model lookup and when a
trainer starts (``detect_anomaly: True`` keeps it on).

:func:`scores_are_probabilities` says whether a model's ``predict`` already returns a
probability (DIN, DIEN, context-aware models such as MMa4CTR) or a raw ranking score (BPR, FPMC,
NGCF, LightGCN, BERT4Rec, GCSAN), whose LogLoss is then computed on ``sigmoid(score)``.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender.gcsan import GCSAN as RecBoleGCSAN
from recbole.utils import FeatureSource, FeatureType

from ..data.batches import gather, row_index
from ..data.paper_split import PositionalSplit
from ..settings import setting

__all__ = [
    "switch_off_anomaly_detection",
    "chronological_order",
    "history_lists",
    "LabeledSequentialDataset",
    "LabeledDIENDataset",
    "GCSAN",
    "session_graphs",
    "scores_are_probabilities",
    "labeled_evaluation",
]


def switch_off_anomaly_detection(config=None) -> None:
    """Undo the process-wide ``torch.autograd.set_detect_anomaly(True)`` that importing RecBole's
    sequential models performs (see the module docstring), unless ``detect_anomaly`` is set."""
    torch.autograd.set_detect_anomaly(bool(setting(config, "detect_anomaly")) if config is not None else False)


switch_off_anomaly_detection()  # the GCSAN import above has just switched it on


# Models whose predict() ends in a sigmoid although they are not context-aware recommenders.
PROBABILITY_MODELS = frozenset({"DIN", "DIEN"})


def labeled_evaluation(config) -> bool:
    """True when validation and test are both labeled (MMa4CTR's protocol)."""
    mode = config["eval_args"]["mode"]
    if isinstance(mode, dict):
        return all(mode.get(phase) == "labeled" for phase in ("valid", "test"))
    return mode == "labeled"


HISTORY_POSITION = "history_position"  # hidden per-row column: the row's place in chronological_order


def chronological_order(users: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows grouped by user, each user's in time order: ``(order, earlier, position)``.

    Rows are ordered by ``times`` with a stable sort (ties keep their row order, as RecBole's
    chronological split does), then by user, stably. ``order[k]`` is the row at position k;
    ``earlier[k]`` the number of rows of the same user before position k; ``position[row]``
    the row's position. A row's history is the rows of the same user just before its position.
    """
    n = users.shape[0]
    chronological = np.argsort(times, kind="stable")
    order = chronological[np.argsort(users[chronological], kind="stable")]
    user_sorted = users[order]
    first = np.ones(n, dtype=bool)
    first[1:] = user_sorted[1:] != user_sorted[:-1]
    run_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    return order, np.arange(n) - run_start, position


def history_lists(values: np.ndarray, lengths: np.ndarray, positions: np.ndarray, max_len: int) -> np.ndarray:
    """``[rows, max_len]`` histories of the rows at ``positions``: ``values`` (one per position,
    in ``chronological_order``) of the ``lengths[position]`` positions just before each, oldest
    first, 0 after the last one (right padding)."""
    positions = np.asarray(positions, dtype=np.int64)
    counts = lengths[positions]
    offsets = np.arange(max_len)
    valid = offsets[None, :] < counts[:, None]
    index = np.where(valid, positions[:, None] - counts[:, None] + offsets[None, :], 0)
    return np.where(valid, values[index], 0).astype(values.dtype, copy=False)


class LabeledSequentialDataset(PositionalSplit, SequentialDataset):
    """RecBole's SequentialDataset with every interaction kept and the row order untouched.

    See the module docstring. Settings: ``MAX_ITEM_LIST_LENGTH`` (history length),
    ``empty_history_length`` (0 or 1, the ``item_length`` of a row without history).
    """

    def _aug_presets(self):
        list_suffix = self.config["LIST_SUFFIX"]
        self.item_id_list_field = self.iid_field + list_suffix
        self.set_field_property(self.item_id_list_field, FeatureType.TOKEN_SEQ, FeatureSource.INTERACTION,
                                self.max_item_list_len)
        self.set_field_property(self.item_list_length_field, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)

    def empty_history_length(self) -> int:
        value = setting(self.config, "empty_history_length")
        if value not in (0, 1):
            raise ValueError(f"empty_history_length must be 0 or 1, got {value}")
        return value

    def _history_columns(self):
        """Extra per-history-position columns: {field: per-row values gathered along the history}."""
        return {}

    def data_augmentation(self):
        """Each row's position in the users' chronological order, each position's item (and extra
        values) and history length; ``item_length`` per row. The lists are made per batch."""
        self.logger.debug("data_augmentation (every row kept, row order unchanged, lists per batch)")
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        users = self.inter_feat[self.uid_field].numpy()
        times = self.inter_feat[self.time_field].numpy()
        values = {self.item_id_list_field: self.inter_feat[self.iid_field].numpy(), **self._history_columns()}
        order, earlier, position = chronological_order(users, times)
        self.history_values = {field: column[order] for field, column in values.items()}
        self.history_lengths = np.minimum(earlier, int(self.max_item_list_len))
        lengths = np.maximum(self.history_lengths[position], self.empty_history_length())
        self.inter_feat.update(Interaction({self.item_list_length_field: torch.from_numpy(lengths),
                                            HISTORY_POSITION: torch.from_numpy(position)}))

    def __getitem__(self, index, join=True):
        """The rows (by one tensor index per column, or RecBole's indexing for an int, a slice, a
        mask) with their history lists in place of their positions; then RecBole's join."""
        rows = row_index(index)
        df = gather(self.inter_feat, rows) if rows is not None else self.inter_feat[index]
        positions = df[HISTORY_POSITION]
        del df[HISTORY_POSITION]
        length = df[self.item_list_length_field]
        del df[self.item_list_length_field]     # after the lists, where the stored column stood
        flat = positions.reshape(-1).numpy()
        lists = {field: torch.from_numpy(history_lists(values, self.history_lengths, flat, int(self.max_item_list_len))
                                         ).reshape(*positions.shape, -1) for field, values in self.history_values.items()}
        df.update(Interaction({self.item_id_list_field: lists.pop(self.item_id_list_field),
                               self.item_list_length_field: length, **lists}))
        return self.join(df) if join else df


class LabeledDIENDataset(LabeledSequentialDataset):
    """:class:`LabeledSequentialDataset` plus DIEN's negative history ``neg_item_id_list``.

    As RecBole's ``DIENDataset``: for each interaction one item drawn uniformly from all items
    except that interaction's own item (RecBole's ``SeqSampler``); each row's negative history is
    the draws of its history rows, aligned position by position.
    """

    def _aug_presets(self):
        super()._aug_presets()
        self.neg_item_list_field = self.config["NEG_PREFIX"] + self.item_id_list_field
        self.copy_field_property(self.neg_item_list_field, self.item_id_list_field)

    def _history_columns(self):
        from recbole.sampler import SeqSampler

        self.seq_sampler = SeqSampler(self)
        negatives = self.seq_sampler.sample_neg_sequence(self.inter_feat[self.iid_field].numpy()).numpy()
        return {self.neg_item_list_field: negatives}


def session_graphs(item_seq: torch.Tensor):
    """RecBole GCSAN's ``_get_slice`` for a whole batch at once, same outputs.

    For each sequence: ``items`` its distinct item ids ascending (padding 0 included when
    present), zero-padded to the sequence length ``T``; ``alias`` the position of each sequence
    element in ``items``; ``graph`` = [A_in | A_out] (``T x 2T``) from the 0/1 adjacency A of
    consecutive items (edges stop before the first padding): A_in[i, j] = A[j, i] / in(i),
    A_out[i, j] = A[i, j] / out(i), a degree of 0 counted as 1. The entries are 0 or 1/d with an
    integer d, and float32 1/d equals RecBole's float64 1/d cast to float32 (checked for every
    d up to 10^5), so float32 arithmetic gives the same tensors.
    """
    batch, length = item_seq.shape
    device = item_seq.device
    sorted_items, order = torch.sort(item_seq, dim=1)
    new_node = torch.ones_like(sorted_items, dtype=torch.bool)
    new_node[:, 1:] = sorted_items[:, 1:] != sorted_items[:, :-1]
    node_of_sorted = torch.cumsum(new_node.long(), dim=1) - 1
    alias = torch.empty_like(item_seq)
    alias.scatter_(1, order, node_of_sorted)
    items = torch.zeros_like(item_seq)
    items.scatter_(1, node_of_sorted, sorted_items)

    graph = torch.zeros(batch, length, 2 * length, dtype=torch.float32, device=device)
    if length > 1:
        linked = torch.cumprod((item_seq[:, 1:] != 0).long(), dim=1).bool()
        rows = torch.arange(batch, device=device).unsqueeze(1).expand(-1, length - 1)[linked]
        source, target = alias[:, :-1][linked], alias[:, 1:][linked]
        graph[rows, target, source] = 1.0  # left half: A transposed
        graph[rows, source, target + length] = 1.0  # right half: A
    incoming, outgoing = graph[:, :, :length], graph[:, :, length:]
    incoming /= incoming.sum(dim=2, keepdim=True).clamp_(min=1)
    outgoing /= outgoing.sum(dim=2, keepdim=True).clamp_(min=1)
    return alias, graph, items


class GCSAN(RecBoleGCSAN):
    """RecBole's GCSAN; only the session-graph construction is vectorised (same tensors)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.fast_graph = bool(setting(config, "gcsan_fast_graph", "properties/model/GCSAN.yaml"))

    def _get_slice(self, item_seq):
        if not self.fast_graph:
            return super()._get_slice(item_seq)
        alias, graph, items = session_graphs(item_seq)
        return alias.to(self.device), graph.to(self.device), items.to(self.device)


def scores_are_probabilities(model, config=None) -> bool:
    """Whether ``model.predict`` returns probabilities rather than raw ranking scores.

    ``score_sigmoid`` in the config decides when set (True: raw scores, squash them; False:
    probabilities). Otherwise: context-aware recommenders (MMa4CTR included) and DIN/DIEN end
    their ``predict`` in a sigmoid; every other model is taken to return raw scores.
    """
    from recbole.model.abstract_recommender import ContextRecommender

    squash = setting(config, "score_sigmoid") if config is not None else None
    if squash is not None:
        return not bool(squash)
    return isinstance(model, ContextRecommender) or type(model).__name__ in PROBABILITY_MODELS
