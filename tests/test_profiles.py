"""User profile math against hand-computed answers."""

import numpy as np
import pytest

from recbole_mma4ctr.profiles import average_pool, modal_value, signed_mean, user_profiles


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
