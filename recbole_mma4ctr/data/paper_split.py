"""The authors' split, for every model: their row order (written by the converter,
``prepare/authors_order.py``) and their cut (here).

What the released code does (``preprocess_inter.py``, ``utils.get_userid_itemid``,
``gen_matrix.py`` / ``cross_matrix.py``, ``mlp.py``; facts, not code):

1. every ``user_action.csv`` row becomes a ``(userid, feedid, label)`` triple, and the list is
   deduplicated through a Python ``set`` (``set(tuple(j) for j in click)``);
2. the set is listed in its iteration order and grouped by user: users in the order of their
   first triple in that listing, each user's triples in listing order (a dict of lists);
3. users with fewer than 100 triples are dropped;
4. the training matrix is those rows, one after the other, and ``mlp.py`` cuts it by position:
   ``[:int(0.8 n)]`` train, ``[int(0.8 n):int(0.9 n)]`` valid, ``[int(0.9 n):]`` test. Because
   the rows are grouped by user, this is a user-level hold-out: apart from the one user cut at
   each boundary, test users have no training rows.
5. The device of a user is taken from the set of ``(userid, device)`` pairs of all rows: the
   pair listed last wins.

Why the order is written by the converter and only the cut lives here: steps 1-2 depend on the
raw file order and on every raw row (a set's iteration order depends on all of its keys), which
only the converter sees; once the rows are written in that order with ``timestamp`` = position,
RecBole's own ``order: TO`` keeps it, for MMa4CTR and every baseline alike (the sequential
baselines' histories follow the same order). What RecBole cannot express is step 4's rounding:
its ``RS`` split rounds the valid and test shares down and gives train the rest, which moves the
cut points by a row or two. :class:`PositionalSplit` (``split_rule: positional``) cuts at
``int(n * cumulative ratio)`` instead; ``split_rule: recbole`` keeps RecBole's rule. Every dataset
class the project builds carries the mixin (``MMa4CTRDataset``, the labeled sequential datasets,
:class:`PositionalSplitDataset` for RecBole's plain ``Dataset``), so one setting moves all of them.

The same mixin offers the WeChat challenge's day split (``split_rule: day``, set by
``--protocol=challenge``): ``split_days: [12, 13, 14]`` puts the rows of days 1-12 in train, day 13
in valid and day 14 in test, the days being the raw ``date_``. The converter writes the rows day by
day with ``timestamp`` = position and lists each day's row count in the manifest
(``rows_by_day``), so a row's day follows from its timestamp and the cut stays one of RecBole's
contiguous splits (:func:`day_cut_points`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from recbole.data.dataset import Dataset

from ..settings import setting

SPLIT_RULES = ("recbole", "positional", "day")
DAY_SETTINGS = "properties/protocol/challenge.yaml (e.g. split_days: [12, 13, 14])"


def positional_cut_points(total: int, ratios) -> list[int]:
    """The authors' cut: ``int(total * r)`` for each cumulative ratio but the last (8:1:1 ->
    ``[int(0.8 n), int(0.9 n)]``). Cumulative sums are rounded to 12 decimals so that
    0.8 + 0.1 is 0.9, as the authors wrote it."""
    ratios = [float(r) for r in ratios]
    if not ratios or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be non-negative with a positive sum, got {ratios}")
    cumulative = np.cumsum(np.asarray(ratios) / sum(ratios))[:-1]
    return [int(total * round(float(c), 12)) for c in cumulative]


def days_of_positions(rows_by_day, positions) -> np.ndarray:
    """The day of each row from its position in the .inter file: ``rows_by_day`` is
    ``[[day, rows], ...]`` in file order (the converter's manifest), each day one block."""
    days = np.asarray([int(day) for day, _ in rows_by_day], dtype=np.int64)
    ends = np.cumsum([int(rows) for _, rows in rows_by_day])
    positions = np.rint(np.asarray(positions, dtype=np.float64)).astype(np.int64)
    total = int(ends[-1]) if len(ends) else 0
    if len(positions) and (positions.min() < 0 or positions.max() >= total):
        raise ValueError(f"split_rule day: a row's timestamp ({int(positions.max())}) is not a position in the "
                         f"{total} rows the manifest's rows_by_day lists")
    return days[np.searchsorted(ends, positions, side="right")]


def day_cut_points(days, split_days) -> list[int]:
    """Cut points for rows whose days (in split order) are ``days``: train = days up to
    ``split_days[0]``, valid = up to ``split_days[1]``, test = up to ``split_days[2]`` (the
    challenge's ``[12, 13, 14]``: train days 1-12, valid day 13, test day 14). The days must not
    decrease along the rows (the chronological order), no row may come after the last test day,
    and no part may be empty."""
    try:
        last = [int(day) for day in split_days]
    except (TypeError, ValueError):
        last = []
    if len(last) != 3 or not last[0] < last[1] < last[2]:
        raise ValueError(f"split_days must be three increasing days [last train day, last valid day, last test day], "
                         f"e.g. [12, 13, 14]; got {split_days!r}")
    days = np.asarray(days, dtype=np.int64)
    span = f"{int(days[0])}..{int(days[-1])}" if len(days) else "none"
    if len(days) and (np.diff(days) < 0).any():
        raise ValueError("split_rule day: the rows are not in day order (it needs the converter's row_order: "
                         "chronological and eval_args order: TO)")
    if len(days) and days[-1] > last[2]:
        raise ValueError(f"split_rule day: {int((days > last[2]).sum())} row(s) come after the last test day "
                         f"{last[2]} (split_days {last}; days in the data: {span})")
    cuts = [int(np.searchsorted(days, last[0], side="right")), int(np.searchsorted(days, last[1], side="right"))]
    sizes = dict(zip(("train", "valid", "test"), np.diff([0] + cuts + [len(days)])))
    empty = [part for part, size in sizes.items() if size == 0]
    if empty:
        raise ValueError(f"split_rule day: no rows for {', '.join(empty)} with split_days {last} (days in the data: {span})")
    return cuts


class PositionalSplit:
    """Dataset mixin: ``split_rule: positional`` cuts RecBole's ``RS`` split where the authors do;
    ``split_rule: day`` cuts it at day boundaries (``split_days``).

    Only the cut points change (``_calcu_split_ids``); ordering (``order: TO`` keeps the
    converter's order) and grouping stay RecBole's. Whatever the rule, an ungrouped split's parts
    are slices of the parent's interactions (``split_by_ratio``), not copies.
    """

    def split_by_ratio(self, ratios, group_by=None):
        """RecBole's split by ratios; ungrouped, each part is a slice of the parent's interactions
        (views sharing its memory) instead of RecBole's copy through a ``range`` index: the same
        rows in the same order, without a second copy of every column (issue 22: 0.2 GB for
        MMa4CTR's full WeChat data, 30 s of indexing; the parent is kept for the whole run)."""
        if group_by is not None:
            return super().split_by_ratio(ratios, group_by)
        total, rows = sum(ratios), len(self)
        cuts = [int(cut) for cut in self._calcu_split_ids(tot=rows, ratios=[ratio / total for ratio in ratios])]
        self._drop_unused_col()
        return [self.copy(self.inter_feat[start:end]) for start, end in zip([0] + cuts, cuts + [rows])]

    def _calcu_split_ids(self, tot, ratios):
        rule = setting(self.config, "split_rule")
        if rule not in SPLIT_RULES:
            raise ValueError(f"split_rule must be one of {', '.join(SPLIT_RULES)}; got {rule!r}")
        if rule == "recbole":
            return super()._calcu_split_ids(tot, ratios)
        if rule == "day":
            return self._day_cut_points(tot, ratios)
        return positional_cut_points(tot, ratios)

    def _day_cut_points(self, tot, ratios):
        """The day split of the whole (time-ordered) interaction list; refuses what it can not cut."""
        args = self.config["eval_args"]
        if len(ratios) != 3 or args.get("group_by") not in (None, "none") or args.get("order") != "TO":
            raise ValueError("split_rule day needs eval_args with split RS of three parts, group_by ~ and order TO")
        manifest_path = Path(self.config["data_path"]) / "manifest.json"
        try:
            blocks = json.loads(manifest_path.read_text()).get("rows_by_day")
        except (OSError, json.JSONDecodeError):
            blocks = None
        if not blocks:
            raise ValueError(f"split_rule day: {manifest_path} lists no rows_by_day (only the WeChat converter with "
                             f"row_order: chronological writes it; reconvert an older folder with --force)")
        positions = self.inter_feat[self.time_field].numpy()
        if len(positions) != tot:
            raise ValueError(f"split_rule day: {tot} rows to split but {len(positions)} timestamps")
        return day_cut_points(days_of_positions(blocks, positions), setting(self.config, "split_days", DAY_SETTINGS))


class PositionalSplitDataset(PositionalSplit, Dataset):
    """RecBole's plain ``Dataset`` (general and context-aware baselines) with the split rule."""


def recbole_dataset(config):
    """RecBole's own dataset for ``config``; where that is the plain ``Dataset`` and the split rule
    is ``positional`` or ``day``, :class:`PositionalSplitDataset` instead (same data, that cut). Any
    other RecBole dataset class cannot take the rule, which is then refused by name."""
    import importlib

    from recbole.data import create_dataset
    from recbole.utils import ModelType

    if setting(config, "split_rule") == "recbole":
        return create_dataset(config)
    module = importlib.import_module("recbole.data.dataset")
    own = getattr(module, f"{config['model']}Dataset", None)
    plain = own is None and config["MODEL_TYPE"] in (ModelType.GENERAL, ModelType.CONTEXT,
                                                            ModelType.TRADITIONAL, ModelType.DECISIONTREE)
    if not plain:
        name = own.__name__ if own is not None else config["MODEL_TYPE"].name.lower()
        raise ValueError(f"split_rule {setting(config, 'split_rule')}: {config['model']} uses RecBole's {name} "
                         f"dataset, which this project does not extend; use split_rule: recbole for it")
    return PositionalSplitDataset(config)
