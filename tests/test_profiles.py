"""User profile math against hand-computed answers."""

import numpy as np
import pytest

from recbole_mma4ctr.profiles import (
    apply_minmax,
    average_pool,
    fit_user_profiles,
    label_signs,
    leave_one_out,
    modal_value,
    raw_profiles,
    removal_terms,
    signed_mean,
    user_profiles,
)

pytestmark = pytest.mark.unit  # pure: no RecBole training, no Ray (python -m pytest -m unit)


def test_signed_mean_by_hand():
    items = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    # user 0: +item0, -item1 -> ([1,2] - [3,4]) / 2 = [-1, -1]; user 1: +item2 -> [10, 0]
    means, counts = signed_mean([0, 0, 1], [0, 1, 2], [1, 0, 1], items, n_users=3)
    np.testing.assert_allclose(means, [[-1, -1], [10, 0], [0, 0]])
    assert counts.tolist() == [2, 1, 0]


def test_average_pool_window():
    row = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    # length 3 -> window 3: means of [1,2,3], [2,3,4], [3,4,5]
    np.testing.assert_allclose(average_pool(row, 3), [[2, 3, 4]])
    np.testing.assert_allclose(average_pool(row, 5), row)
    np.testing.assert_allclose(average_pool(row, 1), [[3.0]])
    assert average_pool(row, 0).shape == (1, 0)
    # longer than the row: adaptive pooling repeats values (PyTorch's AdaptiveAvgPool1d rule)
    np.testing.assert_allclose(average_pool(row[:, :2], 4), [[1, 1, 2, 2]])
    np.testing.assert_allclose(average_pool(row[:, :3], 5), [[1, 1.5, 2, 2.5, 3]])
    torch = pytest.importorskip("torch")
    wide = np.random.default_rng(0).random((3, 10))
    expected = torch.nn.functional.adaptive_avg_pool1d(torch.tensor(wide)[:, None, :], 21)[:, 0, :].numpy()
    np.testing.assert_allclose(average_pool(wide, 21), expected, rtol=1e-6)


def test_modal_value_prefers_most_frequent_then_smallest():
    users = [0, 0, 0, 1, 1]
    devices = [2, 2, 1, 1, 2]
    assert modal_value(users, devices, 3, default=9).tolist() == [2, 1, 9]


def test_user_profiles_scaled_and_cold_start_documented():
    rng = np.random.default_rng(0)
    items = rng.random((6, 8))
    users = np.array([0, 0, 1, 1, 2, 2, 2])
    item_rows = np.array([0, 1, 2, 3, 4, 5, 0])
    labels = np.array([1, 0, 0, 0, 1, 1, 0])
    devices = np.array([1, 1, 2, 2, 1, 2, 2])
    profiles = user_profiles(users, item_rows, labels, items, n_users=4, length=3, devices=devices)
    assert profiles.shape == (4, 4)
    trained = profiles[:3]
    # every column is min-max scaled over the users with training interactions
    np.testing.assert_allclose(trained.min(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(trained.max(axis=0), 1, atol=1e-6)
    # user 3 has no interaction: zero signed mean and the most common device (2), then scaled
    means, _ = signed_mean(users, item_rows, labels, items, 4)
    pooled = average_pool(means, 3)
    low, high = pooled[:3].min(axis=0), pooled[:3].max(axis=0)
    np.testing.assert_allclose(profiles[3, :3], (0 - low) / (high - low), rtol=1e-5)
    assert profiles[3, 3] == pytest.approx(1.0)  # device 2 is the top of the device range


def test_without_device_column_is_constant_zero():
    items = np.eye(4)
    profiles = user_profiles([0, 1], [0, 1], [1, 0], items, n_users=2, length=2, devices=None)
    assert profiles.shape == (2, 3)
    assert (profiles[:, 2] == 0).all()


def loo_example():
    """Four users: one with a single row (n = 1), one seeing the same item twice, a zero item column."""
    rng = np.random.default_rng(3)
    items = rng.random((6, 7))
    items[:, 2] = 0.0  # with length 7 (window 1) this pooled column is constant: span 0
    users = np.array([0, 0, 0, 1, 2, 2, 2, 2, 3, 3])
    item_rows = np.array([0, 1, 2, 3, 4, 4, 5, 1, 0, 5])
    labels = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 1])
    devices = np.array([1, 2, 1, 3, 2, 2, 1, 2, 3, 1])
    return items, users, item_rows, labels, devices


def loo_of_every_row(items, users, item_rows, labels, devices, length, n_users=5):
    fitted = fit_user_profiles(users, item_rows, labels, items, n_users, length, devices)
    positive, negative, cold = removal_terms(items, length, fitted.low, fitted.span)
    removed = np.where(label_signs(labels)[:, None] > 0, positive[item_rows], negative[item_rows])
    return fitted, leave_one_out(fitted.profiles[users, :length], fitted.counts[users], removed, cold)


@pytest.mark.parametrize("length", [3, 7])
def test_leave_one_out_equals_the_profile_recomputed_without_the_row(length):
    items, users, item_rows, labels, devices = loo_example()
    fitted, loo = loo_of_every_row(items, users, item_rows, labels, devices, length)
    assert fitted.counts[users].min() == 1 and (fitted.span[:length] == 0).any() == (length == 7)
    for row in range(len(users)):
        keep = np.arange(len(users)) != row
        raw, _ = raw_profiles(users[keep], item_rows[keep], labels[keep], items, 5, length, devices[keep])
        # the scaler stays the one fitted on the full training set
        expected = apply_minmax(raw, fitted.low, fitted.span)[users[row], :length]
        np.testing.assert_allclose(loo[row], expected, rtol=1e-5, atol=1e-6, err_msg=f"row {row}")


@pytest.mark.parametrize("label", [0, 1])
def test_single_row_user_gets_the_cold_start_columns_whatever_the_label(label):
    items, users, item_rows, labels, devices = loo_example()
    single = np.flatnonzero(users == 1)
    labels[single] = label
    fitted, loo = loo_of_every_row(items, users, item_rows, labels, devices, 3)
    assert fitted.counts[1] == 1 and len(single) == 1
    # the cold-start columns are those of user 4, who has no training row at all
    np.testing.assert_allclose(loo[single[0]], fitted.profiles[4, :3], rtol=1e-6)
    assert not np.allclose(loo[single[0]], fitted.profiles[1, :3])


def test_a_rows_own_label_does_not_reach_its_leave_one_out_profile():
    """Same scaler, flipped label: the row's profile input is unchanged; its user's others move."""
    items, users, item_rows, labels, devices = loo_example()
    length, row = 3, 1
    fitted, loo = loo_of_every_row(items, users, item_rows, labels, devices, length)
    positive, negative, cold = removal_terms(items, length, fitted.low, fitted.span)
    flipped = labels.copy()
    flipped[row] = 1 - flipped[row]
    raw, counts = raw_profiles(users, item_rows, flipped, items, 5, length, devices)
    scaled = apply_minmax(raw, fitted.low, fitted.span)
    removed = np.where(label_signs(flipped)[:, None] > 0, positive[item_rows], negative[item_rows])
    after = leave_one_out(scaled[users, :length], counts[users], removed, cold)
    np.testing.assert_allclose(after[row], loo[row], rtol=1e-5, atol=1e-6)
    same_user = np.flatnonzero((users == users[row]) & (np.arange(len(users)) != row))
    assert not np.allclose(after[same_user], loo[same_user])


def test_user_profiles_is_the_fitted_profiles():
    items, users, item_rows, labels, devices = loo_example()
    fitted = fit_user_profiles(users, item_rows, labels, items, 5, 3, devices)
    np.testing.assert_array_equal(user_profiles(users, item_rows, labels, items, 5, 3, devices), fitted.profiles)
    raw, counts = raw_profiles(users, item_rows, labels, items, 5, 3, devices)
    np.testing.assert_allclose(fitted.low, raw[counts > 0].min(axis=0))
    assert counts.tolist() == [3, 1, 4, 2, 0]


@pytest.mark.parametrize("length", [7, 40])
def test_average_pool_does_not_depend_on_the_rows_pooled_at_once(monkeypatch, length):
    import recbole_mma4ctr.profiles as profiles

    matrix = np.random.default_rng(4).random((50, 30)).astype(np.float32)
    whole = average_pool(matrix, length)
    monkeypatch.setattr(profiles, "POOL_ROWS", 7)
    assert np.array_equal(average_pool(matrix, length), whole)
