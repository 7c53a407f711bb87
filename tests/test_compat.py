"""compat.py's shims for RecBole 1.2.1 on numpy 2, scipy >= 1.13 and pandas 3 (copy-on-write).

The checks that show a shim is needed run where its library version breaks RecBole; the pandas
ones run on pandas 2.x (copy-on-write switched on) and on pandas 3 alike."""

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


PANDAS_3 = int(pd.__version__.split(".")[0]) >= 3


def fill_nan_of(frame, fill):
    """``fill`` (RecBole's ``Dataset._fill_nan`` or the shim) on a frame with a token and a float column."""
    from recbole.utils import FeatureType

    class Holder:
        logger = logging.getLogger("test")
        feat_name_list = ["inter_feat"]
        field2type = {"token": FeatureType.TOKEN, "value": FeatureType.FLOAT}
        inter_feat = frame

    fill(Holder())
    return Holder.inter_feat


def nan_frame():
    return pd.DataFrame({"token": [1.0, np.nan, 3.0], "value": [1.0, np.nan, 3.0]})


def test_recboles_in_place_fill_does_nothing_under_copy_on_write_and_the_shim_fills():
    from recbole.data.dataset import Dataset

    from recbole_mma4ctr.compat import fill_nan

    from contextlib import nullcontext

    copy_on_write = nullcontext() if PANDAS_3 else pd.option_context("mode.copy_on_write", True)
    with copy_on_write, pytest.warns(Warning):
        assert fill_nan_of(nan_frame(), Dataset._fill_nan).isna().sum().sum() == 2  # the bug: NaNs stay
    with copy_on_write:
        filled = fill_nan_of(nan_frame(), fill_nan)
    assert filled["token"].tolist() == [1.0, 0.0, 3.0] and filled["value"].tolist() == [1.0, 2.0, 3.0]


# Missing values in every field type RecBole has, in the interactions and in the item features.
NAN_INTER = ("user_id:token\titem_id:token\tlabel:float\ttimestamp:float\tscore:float\tchannel:token\t"
             "tags:token_seq\tweights:float_seq\n"
             "u1\ti1\t1\t1\t0.5\tweb\ta b\t0.5 1.5\n"
             "u1\ti2\t0\t2\t\t\t\t\n"
             "u2\ti1\t1\t3\t1.5\tapp\tb\t2.5\n"
             "u2\ti3\t0\t4\t\tweb\t\t\n"
             "u3\ti2\t1\t5\t2.5\t\tc a\t\n")
NAN_ITEM = ("item_id:token\tprice:float\tgenre:token\twords:token_seq\tvector:float_seq\n"
            "i1\t2.0\tpop\tx y\t0.25 0.75\n"
            "i2\t\t\t\t\n"
            "i3\t4.0\trock\ty\t\n")


def loaded_nan_dataset(tmp_path):
    """The dataset above through the project's dataset build (``utils.create_dataset``)."""
    from conftest import run_settings
    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset

    folder = tmp_path / "nanset"
    folder.mkdir()
    (folder / "nanset.inter").write_text(NAN_INTER)
    (folder / "nanset.item").write_text(NAN_ITEM)
    settings = run_settings(tmp_path, data_path=tmp_path, load_col="None", unused_col="None")
    return create_dataset(build_config("DeepFM", "nanset", None, settings))


def test_missing_values_of_every_field_type_are_filled_as_recbole_fills_them_on_pandas_2_and_3(tmp_path):
    dataset = loaded_nan_dataset(tmp_path)
    inter, item = dataset.inter_feat, dataset.item_feat   # frames, before RecBole's split

    def tokens(field, ids):
        return [str(dataset.field2id_token[field][int(i)]) for i in ids]

    def rows(frame, field):
        return [np.asarray(value).tolist() for value in frame[field]]

    assert not inter.isna().any().any() and not item.isna().any().any()
    # float: the column mean; token: [PAD]; sequences: empty (rows keep file order here)
    assert inter["score"].tolist() == [0.5, 1.5, 1.5, 1.5, 2.5]
    assert tokens("channel", inter["channel"]) == ["web", "[PAD]", "app", "web", "[PAD]"]
    assert [tokens("tags", row) for row in rows(inter, "tags")] == [["a", "b"], [], ["b"], [], ["c", "a"]]
    assert rows(inter, "weights") == [[0.5, 1.5], [], [2.5], [], []]
    by_item = {token: index for index, token in enumerate(tokens("item_id", item["item_id"]))}
    assert set(by_item) == {"[PAD]", "i1", "i2", "i3"}
    i1, i2, i3 = (by_item[name] for name in ("i1", "i2", "i3"))
    assert item["price"].iloc[[i1, i2, i3]].tolist() == [2.0, 3.0, 4.0]
    assert tokens("genre", item["genre"].iloc[[i1, i2, i3]]) == ["pop", "[PAD]", "rock"]
    assert [tokens("words", row) for row in rows(item, "words")[i1:i1 + 1] + rows(item, "words")[i2:i2 + 1]] == \
        [["x", "y"], []]
    assert [rows(item, "vector")[i] for i in (i1, i2, i3)] == [[0.25, 0.75], [], []]
    import recbole.data.dataset.dataset as recbole_dataset_module
    from recbole.data.dataset import Dataset

    assert recbole_dataset_module.pd is pd and Dataset._fill_nan.__module__.startswith("recbole.")  # undone


@pytest.mark.skipif(not SCIPY_WITHOUT_UPDATE, reason="scipy < 1.13 still has dok_matrix._update")
def test_scipy_without_the_shim_lacks_dok_update():
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", "import scipy.sparse as sp; sp.dok_matrix((1, 1))._update({})"],
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "'dok_matrix' object has no attribute '_update'" in probe.stderr
