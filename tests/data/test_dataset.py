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


@pytest.mark.parametrize("rule", ["recbole", "positional"])
def test_the_splits_are_recboles_rows_as_slices_of_the_parents_columns(tiny_copy, tmp_path, rule):
    import torch
    from recbole.data.dataset import Dataset

    dataset, splits, _ = build_profiles(tiny_copy, "tw", tmp_path, split_rule=rule)
    stock = Dataset.split_by_ratio(dataset, [0.8, 0.1, 0.1])   # RecBole's own: copies by a range index
    for ours, theirs in zip(splits, stock, strict=True):
        assert len(ours) == len(theirs) > 0
        for field, column in theirs.inter_feat.interaction.items():
            assert torch.equal(ours.inter_feat[field], column), field
            parent = dataset.inter_feat[field]
            storage = ours.inter_feat[field].untyped_storage()
            assert storage.data_ptr() == parent.untyped_storage().data_ptr(), field   # a view, no copy


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


def train_arrays(train):
    inter = train.inter_feat
    return tuple(inter[f].numpy() for f in ("user_id", "item_id", "label", "device"))


def test_training_batches_carry_each_users_profile_without_the_row(tiny_copy, tmp_path):
    """Default leave_one_out: a training row sees its user's profile recomputed without it."""
    from recbole_mma4ctr.profiles import apply_minmax, fit_user_profiles, raw_profiles

    dataset, (train, valid, test), stored = build_profiles(tiny_copy, "tw", tmp_path, profile_length=5)
    assert dataset.config["train_profile"] == "leave_one_out"
    users, items, labels, devices = train_arrays(train)
    rows = np.random.default_rng(0).choice(len(users), 12, replace=False)
    batch = train[rows]
    for modality in ("visual", "textual"):
        field = f"profile_{modality}"
        matrix = dataset.modality_matrices[modality]
        fitted = fit_user_profiles(users, items, labels, matrix, dataset.user_num, 5, devices)
        np.testing.assert_array_equal(fitted.profiles, stored[field])
        for position, row in enumerate(rows):
            keep = np.arange(len(users)) != row
            raw, _ = raw_profiles(users[keep], items[keep], labels[keep], matrix, dataset.user_num, 5, devices[keep])
            expected = apply_minmax(raw, fitted.low, fitted.span)[users[row], :5]
            np.testing.assert_allclose(batch[field][position, :5].numpy(), expected, rtol=1e-4, atol=1e-5)
        # the device column is the stored one, and no row sees its inclusive profile
        np.testing.assert_array_equal(batch[field][:, 5].numpy(), stored[field][users[rows], 5])
        assert not np.allclose(batch[field][:, :5].numpy(), stored[field][users[rows], :5])
    # valid and test batches keep the stored train-only profiles, bit for bit
    for split in (valid, test):
        some = split[np.arange(50)]
        for field in stored:
            assert np.array_equal(some[field].numpy(), stored[field][some["user_id"].numpy()]), field


def test_flipping_a_training_label_leaves_that_rows_own_profile_input(tiny_copy, tmp_path):
    from recbole_mma4ctr.profiles import fit_user_profiles

    dataset, (train, _, _), _ = build_profiles(tiny_copy, "tw", tmp_path)
    users, items, labels, devices = train_arrays(train)
    # a row of the busiest user: its flip moves the user's mean least, so the scaler stays put
    row = int(np.flatnonzero(users == np.bincount(users).argmax())[0])
    before = train[np.array([row])]
    path = tiny_copy / "tw" / "tw.inter"
    inter = pd.read_csv(path, sep="\t")
    match = inter.index[(inter["user_id:token"].astype(str) == dataset.id2token("user_id", users[row]))
                        & (inter["item_id:token"].astype(str) == dataset.id2token("item_id", items[row]))
                        & (inter["timestamp:float"] == train.inter_feat["timestamp"][row].item())]
    assert len(match) == 1
    inter.loc[match[0], "label:float"] = 1.0 - inter.loc[match[0], "label:float"]
    inter.to_csv(path, sep="\t", index=False)
    dataset_after, (train_after, _, _), _ = build_profiles(tiny_copy, "tw", tmp_path)
    flipped = train_arrays(train_after)
    # the split is chronological, so the row keeps its position; only its label differs
    assert (flipped[0][row], flipped[1][row], flipped[2][row]) == (users[row], items[row], 1 - labels[row])
    after = train_after[np.array([row])]
    for field in dataset.mm_feature_fields[:-1]:
        matrix = dataset.modality_matrices[field.removeprefix("profile_")]
        # precondition: the fitted scalers agree, so any change would have come from the label
        scalers = [fit_user_profiles(u, i, l, matrix, dataset.user_num, 21, d) for u, i, l, d in (train_arrays(train), flipped)]
        np.testing.assert_allclose(scalers[0].low, scalers[1].low, rtol=1e-12)
        np.testing.assert_allclose(scalers[0].span, scalers[1].span, rtol=1e-12)
        # the user's stored profile did move; the row's own training input did not
        assert not np.allclose(dataset.user_feat[field][users[row]].numpy(), dataset_after.user_feat[field][users[row]].numpy())
        np.testing.assert_allclose(after[field].numpy(), before[field].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("settings", [{"train_profile": "inclusive"}, {"profile_source": "all"}])
def test_inclusive_training_rows_see_the_stored_profiles(tiny_copy, tmp_path, settings):
    """``inclusive``, and the paper's protocol whatever train_profile says, keep the stored profiles."""
    dataset, (train, _, _), stored = build_profiles(tiny_copy, "tw", tmp_path, **settings)
    assert dataset.config["train_profile"] == "inclusive"
    batch = train[np.arange(200)]
    for field in stored:
        assert np.array_equal(batch[field].numpy(), stored[field][batch["user_id"].numpy()]), field


def test_unknown_train_profile_is_refused(tiny_copy, tmp_path):
    with pytest.raises(ValueError, match="train_profile"):
        build_profiles(tiny_copy, "tw", tmp_path, train_profile="exclusive")


def test_leave_one_out_with_negative_sampling_is_refused(tiny_copy, tmp_path):
    # a sampled negative would copy its positive row's corrected profile, which is not "without itself"
    with pytest.raises(ValueError, match="train_profile: inclusive"):
        build_profiles(tiny_copy, "tw", tmp_path, train_neg_sample_args={"distribution": "uniform", "sample_num": 1})
    dataset, _, _ = build_profiles(tiny_copy, "tw", tmp_path, train_profile="inclusive",
                                   train_neg_sample_args={"distribution": "uniform", "sample_num": 1})
    assert dataset.config["train_profile"] == "inclusive"


def test_atomic_files_read_with_the_c_engine_give_recboles_python_engine_frames(tiny_copy, tmp_path, monkeypatch):
    """The fast read (``compat.building_dataset``) changes nothing RecBole loads. The stock build
    it is compared with gets the same missing-value fills (on pandas 3 RecBole's own in-place
    fills do nothing: that is the shim's other job, tested in test_compat), so only the read
    differs between the two."""
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.data.dataset import MMa4CTRDataset
    from recbole_mma4ctr.compat import _CEnginePandas
    from recbole_mma4ctr.utils import create_dataset

    tricky = tmp_path / "tricky.inter"
    tricky.write_text("user_id:token\titem_id:token\tscore:float\n007\t12\t0.1\n7\t\t1e-7\n"
                      "x y\t3\t123456.789012345678\n8\t4\t\n")
    dtype = {"user_id:token": str, "item_id:token": str, "score:float": np.float64}
    python = pd.read_csv(tricky, delimiter="\t", dtype=dtype, engine="python")
    fast = _CEnginePandas(pd).read_csv(tricky, delimiter="\t", dtype=dtype, engine="python")
    pd.testing.assert_frame_equal(fast, python)  # tokens kept as text ("007"), floats bit-equal

    config = build_config("MMa4CTR", "tw", None, run_settings(tmp_path, data_path=tiny_copy))
    patched = create_dataset(config)
    import recbole.data.dataset.dataset as recbole_dataset
    from recbole_mma4ctr.compat import element_lengths, fill_nan

    monkeypatch.setattr(recbole_dataset.Dataset, "_fill_nan", fill_nan)
    monkeypatch.setattr(pd.Series, "agg", element_lengths(pd.Series.agg))
    plain = MMa4CTRDataset(config)
    monkeypatch.undo()
    import recbole.data.dataset.dataset as recbole_dataset_module
    assert recbole_dataset_module.pd is pd  # the swap is undone after the build
    for ours, theirs in ((patched.inter_feat, plain.inter_feat), (patched.item_feat, plain.item_feat)):
        assert set(ours.columns) == set(theirs.columns)
        for column in ours.columns:
            np.testing.assert_array_equal(np.asarray(ours[column]), np.asarray(theirs[column]), err_msg=column)
