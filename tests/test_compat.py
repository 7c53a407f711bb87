"""compat.py's shims for RecBole 1.2.1 on numpy 2, scipy >= 1.13 and pandas copy-on-write.

These run in both CI environments (the pinned one and the numpy-2 one); the checks that show a
shim is needed run where its library version breaks RecBole."""

import logging

import numpy as np
import pandas as pd
import pytest
import scipy
import scipy.sparse as sp

NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
SCIPY_WITHOUT_UPDATE = tuple(int(p) for p in scipy.__version__.split(".")[:2]) >= (1, 13)


@pytest.mark.unit
@pytest.mark.skipif(not NUMPY_2, reason="RecBole's own numpy aliases work on numpy 1.x")
def test_recbole_own_compatibility_settings_fail_on_numpy_2():
    from recbole.config import Config

    with pytest.raises(AttributeError, match="np.float_"):
        Config.compatibility_settings(None)


@pytest.mark.unit
def test_numpy_aliases_are_the_types_recbole_expects():
    from recbole_mma4ctr.compat import recbole_stack_settings

    recbole_stack_settings()
    assert (np.float, np.int, np.long, np.bool, np.complex) == (np.float64, np.int_, np.int_, np.bool_, np.complex128)
    assert (np.object, np.str, np.unicode) == (np.object_, np.str_, np.str_)
    # RecBole's Interaction reads np.float at run time (interaction.py) ...
    from recbole.data.interaction import _convert_to_tensor

    assert _convert_to_tensor(np.array([1.5, 2.0])).dtype.is_floating_point
    # ... and its Config, built the project's way, no longer fails on numpy 2
    from recbole_mma4ctr.config import MMa4CTRConfig

    assert MMa4CTRConfig.compatibility_settings.__qualname__.startswith("MMa4CTRConfig")


@pytest.mark.unit
def test_dok_update_fills_lightgcn_adjacency_with_the_known_normalisation():
    from recbole.model.general_recommender.lightgcn import LightGCN

    from recbole_mma4ctr.compat import dok_update

    dok_update()
    if SCIPY_WITHOUT_UPDATE:
        assert sp.dok_matrix._update.__module__ == "recbole_mma4ctr.compat"
    # 2 users, 3 items: u0-i0, u0-i1, u1-i1, u1-i2
    interactions = sp.coo_matrix((np.ones(4, dtype=np.float32), ([0, 0, 1, 1], [0, 1, 1, 2])), shape=(2, 3))

    class Graph:
        n_users, n_items, interaction_matrix = 2, 3, interactions

    laplacian = LightGCN.get_norm_adj_mat(Graph()).to_dense().numpy()
    adjacency = np.zeros((5, 5))
    for user, item in zip([0, 0, 1, 1], [0, 1, 1, 2]):
        adjacency[user, 2 + item] = adjacency[2 + item, user] = 1
    degree = adjacency.sum(axis=1) + 1e-7
    expected = adjacency / np.sqrt(degree[:, None] * degree[None, :])
    np.testing.assert_allclose(laplacian, expected, rtol=1e-6)


def fill_nan_of(frame):
    """RecBole's ``Dataset._fill_nan`` on a frame with a token and a float column."""
    from recbole.data.dataset import Dataset
    from recbole.utils import FeatureType

    class Holder:
        logger = logging.getLogger("test")
        feat_name_list = ["inter_feat"]
        field2type = {"token": FeatureType.TOKEN, "value": FeatureType.FLOAT}
        inter_feat = frame

    Dataset._fill_nan(Holder())
    return frame


def nan_frame():
    return pd.DataFrame({"token": [1.0, np.nan, 3.0], "value": [1.0, np.nan, 3.0]})


@pytest.mark.unit
@pytest.mark.skipif(int(pd.__version__.split(".")[0]) >= 3, reason="pandas 3 is refused")
def test_copy_on_write_is_off_while_a_dataset_is_built():
    from recbole_mma4ctr.compat import building_dataset

    with pd.option_context("mode.copy_on_write", True), pytest.warns(Warning):
        assert fill_nan_of(nan_frame()).isna().sum().sum() == 2  # the bug: NaNs stay
    with pd.option_context("mode.copy_on_write", True):
        with building_dataset():
            filled = fill_nan_of(nan_frame())
        assert pd.get_option("mode.copy_on_write") is True  # restored after the build
    assert filled["token"].tolist() == [1.0, 0.0, 3.0] and filled["value"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.unit
def test_pandas_3_is_refused_with_a_message(monkeypatch):
    from recbole_mma4ctr.compat import building_dataset

    monkeypatch.setattr(pd, "__version__", "3.0.0")
    with pytest.raises(RuntimeError, match="needs pandas < 3"):
        with building_dataset():
            pass


@pytest.mark.skipif(not SCIPY_WITHOUT_UPDATE, reason="scipy < 1.13 still has dok_matrix._update")
def test_scipy_without_the_shim_lacks_dok_update():
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", "import scipy.sparse as sp; sp.dok_matrix((1, 1))._update({})"],
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "'dok_matrix' object has no attribute '_update'" in probe.stderr
