"""The fast training path gives the batches RecBole's stock path gives, field for field, bit for bit.

The reference below is the path before issue 15: RecBole's TrainDataLoader iterated row by row
by torch's samplers, RecBole's ``Interaction`` indexing (a Python list of rows) for the
interactions, user and item features, and the leave-one-out correction applied per batch.
"""

import numpy as np
import pytest
import torch

from conftest import run_settings
from test_dataset import tiny_copy  # noqa: F401  (the fixture: the tiny atomic files as dataset "tw")


def prepared(root, tmp_path, **extra):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_mma4ctr.data.batches import sliced_batches
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset

    config = build_config("MMa4CTR", "tw", None, run_settings(tmp_path, data_path=root, train_batch_size=999, **extra))
    init_seed(config["seed"], config["reproducibility"])
    with sliced_batches():
        loaders = data_preparation(config, create_dataset(config))
    return config, loaders


def stock_rows(dataset, index):
    """RecBole's own Dataset.__getitem__: Interaction indexing by list, then RecBole's join."""
    df = dataset.inter_feat[index]
    df.update(dataset.user_feat[df[dataset.uid_field]])
    df.update(dataset.item_feat[df[dataset.iid_field]])
    return df


def stock_leave_one_out(dataset, df):
    """The per-batch correction as the formula reads (``profiles.leave_one_out``'s docstring),
    written out here so that the project's in-place computation is checked against it: each row's
    profile without the row, ``(n z - q) / (n - 1)`` (the cold-start columns for n = 1), from
    per-user counts and per-item removal terms, in float64, written back into the float32
    profile."""
    from recbole_mma4ctr.profiles import label_signs, removal_terms

    train = dataset.inter_feat
    fitted = dataset.compute_profiles(train)
    counts = next(iter(fitted.values())).counts[df[dataset.uid_field].numpy()]
    items = df[dataset.iid_field].numpy()
    positive_row = label_signs(df[dataset.label_field].numpy()) > 0
    length = dataset.profile_length
    n = counts.astype(np.float64)[:, None]
    for modality in dataset.fused_modalities:
        field = f"profile_{modality}"
        positive, negative, cold = removal_terms(dataset.modality_matrices[modality], length,
                                                 fitted[field].low, fitted[field].span)
        profile = df[field].numpy().copy()
        removed = np.where(positive_row[:, None], positive[items], negative[items]).astype(np.float64)
        others = (n * profile[:, :length].astype(np.float64) - removed) / np.maximum(n - 1, 1)
        profile[:, :length] = np.where(n > 1, others, np.asarray(cold, dtype=np.float64)[None, :])
        df[field] = torch.from_numpy(profile)
    return df


def stock_loader(config, dataset, shuffle, correct):
    from recbole.data.dataloader import TrainDataLoader

    class StockTrainDataLoader(TrainDataLoader):
        def collate_fn(self, index):
            df = stock_rows(self._dataset, np.array(index))
            return stock_leave_one_out(self._dataset, df) if correct else df

    return StockTrainDataLoader(config, dataset, None, shuffle=shuffle)


def assert_same_batches(ours, theirs):
    assert set(ours.interaction) == set(theirs.interaction)
    for field in theirs.interaction:
        assert ours[field].dtype == theirs[field].dtype, field
        assert torch.equal(ours[field], theirs[field]), field


@pytest.mark.parametrize("shuffle", [True, False])
def test_training_batches_are_recboles_stock_batches_epoch_after_epoch(tiny_copy, tmp_path, shuffle):
    from recbole_mma4ctr.data.batches import PermutationTrainDataLoader

    config, (train, _, _) = prepared(tiny_copy, tmp_path, shuffle=shuffle)
    assert type(train) is PermutationTrainDataLoader
    dataset = train._dataset
    assert dataset.leave_one_out_terms is not None
    reference = stock_loader(config, dataset, shuffle, correct=True)
    assert len(train) == len(reference) == -(-len(dataset) // 999)
    moved = 0
    for _ in range(3):  # the generator must move as RecBole's does, or epoch 2 would differ
        batches = list(zip(train, reference, strict=True))
        assert len(batches[-1][0]) == len(dataset) % 999  # the short last batch too
        for ours, theirs in batches:
            assert_same_batches(ours, theirs)
            stored = dataset.user_feat["profile_visual"][ours["user_id"]]
            moved += int((ours["profile_visual"] != stored).any(dim=1).sum())
    assert moved > 0  # the rows really carry their leave-one-out profiles, not the stored ones
    first = [batch["item_id"] for batch in train]
    second = [batch["item_id"] for batch in train]
    assert shuffle != all(torch.equal(a, b) for a, b in zip(first, second))


def test_inclusive_training_batches_are_recboles_stock_batches(tiny_copy, tmp_path):
    config, (train, _, _) = prepared(tiny_copy, tmp_path, train_profile="inclusive")
    assert train._dataset.leave_one_out_terms is None
    for ours, theirs in zip(train, stock_loader(config, train._dataset, True, correct=False), strict=True):
        assert_same_batches(ours, theirs)


def test_valid_and_test_batches_are_recboles_stock_batches(tiny_copy, tmp_path):
    _, (_, valid, test) = prepared(tiny_copy, tmp_path)
    for loader in (valid, test):
        dataset = loader._dataset
        assert dataset.leave_one_out_terms is None
        rows = np.random.default_rng(1).permutation(len(dataset))[:500]
        assert_same_batches(dataset[rows], stock_rows(dataset, rows))
        assert_same_batches(dataset[torch.from_numpy(rows)], stock_rows(dataset, rows))
        assert_same_batches(dataset[list(rows)], stock_rows(dataset, rows))


def test_the_loaders_change_only_inside_the_context(tiny_copy, tmp_path):
    import recbole.data.utils as data_utils
    from recbole.data.dataloader import NegSampleEvalDataLoader, TrainDataLoader

    from recbole_mma4ctr.data.batches import PermutationTrainDataLoader, SlicedEvalDataLoader

    before = data_utils.get_dataloader
    _, (train, valid, test) = prepared(tiny_copy, tmp_path)
    assert data_utils.get_dataloader is before
    assert isinstance(train, TrainDataLoader) and type(train) is PermutationTrainDataLoader
    for loader in (valid, test):
        assert isinstance(loader, NegSampleEvalDataLoader) and type(loader) is SlicedEvalDataLoader
    for loader in (train, valid, test):   # not RecBole's list of every row number
        assert loader.__dict__["dataset"] == range(loader.sample_size)
        assert loader.sampler.data_source == range(loader.sample_size)


@pytest.mark.parametrize("batch", [999, 100_000])
def test_evaluation_batches_are_recboles_stock_batches(tiny_copy, tmp_path, batch):
    from recbole.data.dataloader import NegSampleEvalDataLoader

    config, (_, valid, test) = prepared(tiny_copy, tmp_path, eval_batch_size=batch)
    for loader in (valid, test):
        stock = NegSampleEvalDataLoader(config, loader._dataset, loader._sampler, shuffle=False)
        assert len(loader) == len(stock) == -(-len(loader._dataset) // batch)
        for _ in range(2):
            for ours, theirs in zip(loader, stock, strict=True):
                assert ours[1:] == theirs[1:] == (None, None, None)
                assert_same_batches(ours[0], theirs[0])
        assert torch.equal(loader.generator.get_state(), stock.generator.get_state())


def test_row_index_takes_row_numbers_and_leaves_the_rest_to_recbole():
    from recbole_mma4ctr.data.batches import row_index

    assert torch.equal(row_index(np.array([3, 1], dtype=np.int32)), torch.tensor([3, 1]))
    assert torch.equal(row_index([2, 0]), torch.tensor([2, 0]))
    assert row_index(torch.tensor([4])).dtype == torch.int64
    for other in (3, slice(0, 2), np.array([True, False]), torch.tensor([True]), np.zeros((2, 2), dtype=int),
                  np.array([0.5])):
        assert row_index(other) is None


def test_a_rows_leave_one_out_profile_does_not_depend_on_its_batch(tiny_copy, tmp_path):
    """Corrected per batch: the same row gets the same profile whatever rows share its batch."""
    _, (train, _, _) = prepared(tiny_copy, tmp_path)
    dataset = train._dataset
    rows = np.random.default_rng(2).permutation(len(dataset))
    whole = dataset[rows]
    parts = [dataset[rows[start:start + 7]] for start in range(0, len(rows), 7)]
    for field in whole.interaction:
        assert torch.equal(torch.cat([part[field] for part in parts]), whole[field]), field


@pytest.mark.unit
def test_work_arrays_are_reused_and_grown():
    from recbole_mma4ctr.data.batches import WorkArrays

    work = WorkArrays()
    first = work.get("a", 10, 3, np.float64)
    assert first.shape == (10, 3) and first.dtype == np.float64
    assert np.shares_memory(work.get("a", 4, 3, np.float64), first)       # a smaller batch: the same memory
    assert not np.shares_memory(work.get("b", 10, 3, np.float64), first)  # another name: its own
    grown = work.get("a", 20, 3, np.float64)
    assert grown.shape == (20, 3) and not np.shares_memory(grown, first)
    assert work.get("a", 20, 3, np.float32).dtype == np.float32
