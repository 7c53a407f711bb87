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

"""

from __future__ import annotations

import numpy as np
from recbole.data.dataset import Dataset

from .defaults import setting

SPLIT_RULES = ("recbole", "positional")


def positional_cut_points(total: int, ratios) -> list[int]:
    """The authors' cut: ``int(total * r)`` for each cumulative ratio but the last (8:1:1 ->
    ``[int(0.8 n), int(0.9 n)]``). Cumulative sums are rounded to 12 decimals so that
    0.8 + 0.1 is 0.9, as the authors wrote it."""
    ratios = [float(r) for r in ratios]
    if not ratios or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be non-negative with a positive sum, got {ratios}")
    cumulative = np.cumsum(np.asarray(ratios) / sum(ratios))[:-1]
    return [int(total * round(float(c), 12)) for c in cumulative]


class PositionalSplit:
    """Dataset mixin: ``split_rule: positional`` cuts RecBole's ``RS`` split where the authors do.

    Only the cut points change (``_calcu_split_ids``); ordering (``order: TO`` keeps the
    converter's order) and grouping stay RecBole's.
    """

    def _calcu_split_ids(self, tot, ratios):
        rule = setting(self.config, "split_rule")
        if rule not in SPLIT_RULES:
            raise ValueError(f"split_rule must be one of {', '.join(SPLIT_RULES)}; got {rule!r}")
        if rule == "recbole":
            return super()._calcu_split_ids(tot, ratios)
        return positional_cut_points(tot, ratios)


class PositionalSplitDataset(PositionalSplit, Dataset):
    """RecBole's plain ``Dataset`` (general and context-aware baselines) with the split rule."""


def recbole_dataset(config):
    """RecBole's own dataset for ``config``; where that is the plain ``Dataset`` and the split rule
    is ``positional``, :class:`PositionalSplitDataset` instead (same data, the authors' cut). Any
    other RecBole dataset class cannot take the rule, which is then refused by name."""
    import importlib

    from recbole.data import create_dataset
    from recbole.utils import ModelType

    if setting(config, "split_rule") != "positional":
        return create_dataset(config)
    module = importlib.import_module("recbole.data.dataset")
    own = getattr(module, f"{config['model']}Dataset", None)
    plain = own is None and config["MODEL_TYPE"] in (ModelType.GENERAL, ModelType.CONTEXT,
                                                            ModelType.TRADITIONAL, ModelType.DECISIONTREE)
    if not plain:
        name = own.__name__ if own is not None else config["MODEL_TYPE"].name.lower()
        raise ValueError(f"split_rule positional: {config['model']} uses RecBole's {name} dataset, "
                         f"which this project does not extend; use split_rule: recbole for it")
    return PositionalSplitDataset(config)
