"""MMa4CTRDataset: profiles come from the training split only, and features are where promised."""

import numpy as np
import pandas as pd
import pytest

from conftest import copy_atomic, run_settings


def build_profiles(root, name, tmp_path, **extra):
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset

    config = build_config("MMa4CTR", name, None, run_settings(tmp_path, data_path=root, **extra))
    dataset = create_dataset(config)
    train, valid, test = dataset.build()
    profiles = {f: dataset.user_feat[f].numpy().copy() for f in dataset.mm_feature_fields[:-1]}
    return dataset, (train, valid, test), profiles


def split_row_sets(inter: pd.DataFrame):
    """Row positions of the chronological 8:1:1 split, as RecBole computes it (time order)."""
    order = np.argsort(inter["timestamp:float"].to_numpy(), kind="stable")
    n = len(order)
    n_valid, n_test = int(0.1 * n), int(0.1 * n)
    n_train = n - n_valid - n_test
    return order[:n_train], order[n_train:]


@pytest.fixture()
def tiny_copy(tiny_atomic, tmp_path):
    source, _ = tiny_atomic
    root = tmp_path / "data"
    copy_atomic(source, root, "tw")
    return root


def test_changing_valid_and_test_labels_leaves_every_profile_bit_identical(tiny_copy, tmp_path):
    _, _, before = build_profiles(tiny_copy, "tw", tmp_path)
    path = tiny_copy / "tw" / "tw.inter"
    inter = pd.read_csv(path, sep="\t")
    _, held_out = split_row_sets(inter)
    inter.loc[inter.index[held_out], "label:float"] = 1.0 - inter.loc[inter.index[held_out], "label:float"]
    inter.to_csv(path, sep="\t", index=False)
    _, _, after = build_profiles(tiny_copy, "tw", tmp_path)
    assert before.keys() == after.keys()
    for field in before:
        assert np.array_equal(before[field], after[field]), field


def test_changing_a_training_label_changes_its_users_profile(tiny_copy, tmp_path):
    dataset, _, before = build_profiles(tiny_copy, "tw", tmp_path)
    path = tiny_copy / "tw" / "tw.inter"
    inter = pd.read_csv(path, sep="\t")
    train_rows, _ = split_row_sets(inter)
    row = inter.index[train_rows[0]]
    inter.loc[row, "label:float"] = 1.0 - inter.loc[row, "label:float"]
    inter.to_csv(path, sep="\t", index=False)
    _, _, after = build_profiles(tiny_copy, "tw", tmp_path)
    user = dataset.field2token_id["user_id"][str(inter.loc[row, "user_id:token"])]
    for field in before:
        assert not np.array_equal(before[field][user], after[field][user]), field


def test_paper_protocol_profiles_do_see_test_labels(tiny_copy, tmp_path):
    """The contrast that makes the honest default meaningful: profile_source=all leaks."""
    _, _, before = build_profiles(tiny_copy, "tw", tmp_path, profile_source="all")
    path = tiny_copy / "tw" / "tw.inter"
    inter = pd.read_csv(path, sep="\t")
    _, held_out = split_row_sets(inter)
    inter.loc[inter.index[held_out], "label:float"] = 1.0 - inter.loc[inter.index[held_out], "label:float"]
    inter.to_csv(path, sep="\t", index=False)
    _, _, after = build_profiles(tiny_copy, "tw", tmp_path, profile_source="all")
    assert any(not np.array_equal(before[f], after[f]) for f in before)


def test_feature_fields_have_the_promised_widths(tiny_copy, tmp_path):
    dataset, (train, valid, test), profiles = build_profiles(tiny_copy, "tw", tmp_path, profile_length=5)
    assert dataset.mm_feature_fields == ["profile_visual", "profile_acoustic", "profile_textual", "item_mm"]
    for field in dataset.mm_feature_fields[:-1]:
        assert dataset.field2seqlen[field] == 6
    fused = sum(dataset.modality_matrices[m].shape[1] for m in dataset.fused_modalities)
    assert dataset.field2seqlen["item_mm"] == min(fused, 128)
    # the splits share the injected features, so every dataloader joins them
    batch = test[np.arange(5)]
    assert batch["profile_visual"].shape == (5, 6)
    assert batch["item_mm"].shape == (5, dataset.field2seqlen["item_mm"])


def test_cold_start_users_get_the_documented_profile(tiny_copy, tmp_path):
    """Users first seen after the training split: zero signed mean + most common device, scaled."""
    from recbole_mma4ctr.profiles import apply_minmax, average_pool, fit_minmax, most_common, signed_mean

    # move one user's interactions after everybody else's: the user has no training interaction
    path = tiny_copy / "tw" / "tw.inter"
    inter = pd.read_csv(path, sep="\t")
    late_user = inter["user_id:token"].iloc[0]
    mine = inter["user_id:token"] == late_user
    inter.loc[mine, "timestamp:float"] = inter["timestamp:float"].max() + 1 + np.arange(mine.sum())
    inter.to_csv(path, sep="\t", index=False)

    dataset, (train, _, _), profiles = build_profiles(tiny_copy, "tw", tmp_path, profile_length=5)
    users = train.inter_feat["user_id"].numpy()
    items = train.inter_feat["item_id"].numpy()
    labels = train.inter_feat["label"].numpy()
    devices = train.inter_feat["device"].numpy()
    seen = np.bincount(users, minlength=dataset.user_num) > 0
    means, counts = signed_mean(users, items, labels, dataset.modality_matrices["visual"], dataset.user_num)
    raw = np.hstack([average_pool(means, 5), np.zeros((dataset.user_num, 1))])
    raw[:, -1] = most_common(devices)
    low, span = fit_minmax(np.hstack([average_pool(means, 5)[seen], np.zeros((seen.sum(), 1))]))
    cold = np.flatnonzero(~seen)[1:]  # id 0 is RecBole's padding user
    assert dataset.field2token_id["user_id"][str(late_user)] in cold
    expected = apply_minmax(raw, low, span)
    np.testing.assert_allclose(profiles["profile_visual"][cold, :5], expected[cold, :5], rtol=1e-5, atol=1e-6)
    # the device column: the most common training device, through the same scaler
    device_low = devices.min() if len(np.unique(devices)) > 1 else 0
    device_span = devices.max() - devices.min()
    assert profiles["profile_visual"][cold, 5] == pytest.approx((most_common(devices) - device_low) / device_span)
