"""DCNV2 and DCNV2+mm in the feature-fair set (issue 23, part 2): the set as the comparison reads
it, and one short run of each whose record states the model, RecBole's class and the features."""

import pytest

from conftest import copy_atomic, run_settings
from recbole_mma4ctr.cells import make_cell
from recbole_mma4ctr.experiment.compare import model_sets, parse_models

NAME = "dcn"


def test_the_feature_fair_set_holds_each_model_with_and_without_the_fused_vector():
    models = parse_models("feature_fair")
    assert models == model_sets()["feature_fair"]
    assert models.index("DCNV2+mm") == models.index("DeepFM+mm") + 2
    for name in ("DeepFM", "DCNV2", "DIN"):
        assert name in models and f"{name}+mm" in models
    for model in models:               # every name is one the comparison accepts
        assert make_cell(model, "wechat", prepare=False)["model"] == model
    assert parse_models("all")[0] == "MMa4CTR" and "DCNV2" not in parse_models("all")
    assert parse_models("DCNV2, DCNV2+mm") == ["DCNV2", "DCNV2+mm"]


@pytest.fixture(scope="module")
def records(tiny_atomic, tmp_path_factory):
    from recbole_mma4ctr.run import run_cell

    source, _ = tiny_atomic
    root = tmp_path_factory.mktemp("dcnv2")
    copy_atomic(source, root / "data", NAME)
    small = run_settings(root, data_path=root / "data", state="warning", epochs=1, mlp_hidden_size="[32,32]")
    return {model: run_cell(make_cell(model, NAME, None, small, kind="compare", prepare=False))[0]
            for model in ("DCNV2", "DCNV2+mm")}


def test_dcnv2_and_dcnv2_mm_run_and_their_records_say_what_they_used(records):
    plain, mm = records["DCNV2"], records["DCNV2+mm"]
    assert plain["status"] == mm["status"] == "ok"
    assert (plain["model"], mm["model"]) == ("DCNV2", "DCNV2+mm")
    assert plain["config"]["model"] == mm["config"]["model"] == "DCNV2"
    assert plain["features"] is None
    assert mm["features"]["input_dims"] == {"item_mm": 128} and mm["features"]["fusion"] == "vat_concat"
    assert mm["config"]["numerical_features"] == ["item_mm"] and not plain["config"]["numerical_features"]
    for key in ("structure", "cross_layer_num", "mixed", "mlp_hidden_size", "embedding_size"):
        assert plain["config"][key] == mm["config"][key]
    # the one extra field: its (128 + 1) x embedding_size table, and a wider cross network and MLP input
    assert mm["trainable_parameters"] - plain["trainable_parameters"] >= 129 * plain["config"]["embedding_size"]
    assert plain["test_rows"] == mm["test_rows"]         # the same scored test rows, side by side
    assert 0.0 < plain["test"]["auc"] < 1.0 and 0.0 < mm["test"]["auc"] < 1.0
