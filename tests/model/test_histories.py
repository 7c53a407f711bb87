"""The sequential baselines' history lists, made per batch, are the lists stored per row, bit for bit.

The reference is RecBole's stock path over stored lists: each row's ``item_id_list`` (and DIEN's
``neg_item_id_list``) written into the interactions before the split, by a plain Python loop over
the rows in stable time order (a user's last ``MAX_ITEM_LIST_LENGTH`` earlier rows, oldest first,
zero-padded on the right), then RecBole's own sort, split, ``Interaction`` indexing and join.
The project's datasets keep only each row's position and build the lists per batch
(``baselines.history_lists``); every batch of every split must be the same, field for field.
"""

from collections import defaultdict

import numpy as np
import pytest
import torch

from conftest import copy_atomic, run_settings

MAX_LEN = 5  # short, so that long histories are cut


@pytest.fixture()
def data(tiny_atomic, tmp_path):
    source, _ = tiny_atomic
    copy_atomic(source, tmp_path / "data", "th")
    return tmp_path


def stock_augmentation(self):
    """Stored lists, as RecBole keeps them: one ``[rows, MAX_LEN]`` row per interaction."""
    from recbole.data.interaction import Interaction

    self._aug_presets()
    users = self.inter_feat[self.uid_field].numpy()
    times = self.inter_feat[self.time_field].numpy()
    values = {self.item_id_list_field: self.inter_feat[self.iid_field].numpy(), **self._history_columns()}
    max_len = int(self.max_item_list_len)
    lists = {field: np.zeros((len(users), max_len), dtype=column.dtype) for field, column in values.items()}
    lengths = np.zeros(len(users), dtype=np.int64)
    earlier = defaultdict(list)
    for row in sorted(range(len(users)), key=lambda r: times[r]):   # stable: ties keep the file order
        history = earlier[users[row]][-max_len:]
        for field, column in values.items():
            lists[field][row, :len(history)] = column[history]
        lengths[row] = len(history)
        earlier[users[row]].append(row)
    lengths = np.maximum(lengths, self.empty_history_length())
    columns = {self.item_id_list_field: lists.pop(self.item_id_list_field), self.item_list_length_field: lengths,
               **lists}
    self.inter_feat.update(Interaction({field: torch.from_numpy(column) for field, column in columns.items()}))


def built(model, root, stock):
    """(config, the three splits, the three dataloaders) of ``model``, ours or the stock reference."""
    from recbole.data import data_preparation
    from recbole.data.dataset import Dataset
    from recbole.utils import init_seed

    from recbole_mma4ctr.compat import building_dataset
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.data.batches import sliced_batches
    from recbole_mma4ctr.utils import create_dataset

    config = build_config(model, "th", None, run_settings(root, data_path=root / "data", MAX_ITEM_LIST_LENGTH=MAX_LEN,
                                                            train_batch_size=997, eval_batch_size=1009))
    init_seed(config["seed"], config["reproducibility"])
    if stock:
        ours = type(create_dataset(config))
        reference = type(f"Stock{ours.__name__}", (ours,), {"data_augmentation": stock_augmentation,
                                                            "__getitem__": Dataset.__getitem__})
        init_seed(config["seed"], config["reproducibility"])
        with building_dataset(config["TIME_FIELD"]):
            dataset = reference(config)
        loaders = data_preparation(config, dataset)
    else:
        dataset = create_dataset(config)
        with sliced_batches():
            loaders = data_preparation(config, dataset)
    return config, [loader._dataset for loader in loaders], loaders


def assert_same(ours, theirs):
    assert list(ours.interaction) == list(theirs.interaction)
    for field in theirs.interaction:
        assert ours[field].dtype == theirs[field].dtype, field
        assert ours[field].shape == theirs[field].shape, field
        assert torch.equal(ours[field], theirs[field]), field


@pytest.mark.parametrize("model", ["DIN", "DIEN", "DIN+mm"])
def test_every_batch_holds_the_stored_lists(data, model):
    _, ours, our_loaders = built(model, data, stock=False)
    _, theirs, their_loaders = built(model, data, stock=True)
    assert "history_position" not in theirs[0].inter_feat and "item_id_list" not in ours[0].inter_feat
    rng = np.random.default_rng(5)
    cut = 0
    for mine, stock in zip(ours, theirs):
        assert len(mine) == len(stock)
        rows = rng.permutation(len(mine))[:700]
        for index in (rows, torch.from_numpy(rows), list(rows), slice(3, 60), 7):
            assert_same(mine[index], stock[index])
        cut += int((stock.inter_feat["item_length"] == MAX_LEN).sum())
    assert cut > 0   # some histories are longer than MAX_ITEM_LIST_LENGTH
    for mine, stock in zip(our_loaders, their_loaders):
        for _ in range(2):   # epoch after epoch (the training loader reshuffles)
            for our_batch, their_batch in zip(mine, stock, strict=True):
                our_batch = our_batch if not isinstance(our_batch, tuple) else our_batch[0]
                their_batch = their_batch if not isinstance(their_batch, tuple) else their_batch[0]
                assert_same(our_batch, their_batch)

