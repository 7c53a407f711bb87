"""Tests of recbole_mma4ctr.metrics: per-user AUC, GAUC, UAUC and their RecBole wiring."""

import math
import subprocess
import sys
import zlib

import numpy as np
import pytest

from recbole_mma4ctr.stats import gauc, per_user_auc, uauc

# ---------------------------------------------------------------------------------------------
# hand-computed cases
# ---------------------------------------------------------------------------------------------

# user 7: 4 rows, scores 0.9(+) 0.5(-) 0.5(+) 0.1(-).
#   pairs (pos, neg): (0.9,0.5)=1 (0.9,0.1)=1 (0.5,0.5)=tie 0.5 (0.5,0.1)=1  -> 3.5 / 4 = 0.875
# user 3: 3 rows, scores 0.2(+) 0.8(-) 0.4(-).
#   pairs: (0.2,0.8)=0 (0.2,0.4)=0 -> 0 / 2 = 0.0
# user 5: 2 rows, both positive -> skipped (one class only)
# user 9: 5 rows, scores 0.3(-) 0.6(+) 0.7(+) 0.6(-) 0.1(-).
#   pos 0.6: beats 0.3, 0.1, ties 0.6 -> 2.5; pos 0.7: beats all three -> 3; 5.5 / 6
HAND_SCORES = [0.9, 0.2, 0.5, 0.7, 0.8, 0.5, 0.3, 0.1, 0.6, 0.4, 0.6, 0.7, 0.6, 0.1]
HAND_LABELS = [1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0]
HAND_USERS = [7, 3, 7, 5, 3, 7, 9, 7, 9, 3, 5, 9, 9, 9]
HAND_AUC = {3: 0.0, 7: 0.875, 9: 5.5 / 6}
HAND_ROWS = {3: 3, 7: 4, 9: 5}


@pytest.mark.unit
def test_hand_computed_per_user_auc():
    users, auc, n_rows = per_user_auc(HAND_SCORES, HAND_LABELS, HAND_USERS)
    assert users.tolist() == [3, 7, 9]  # user 5 (all positive) skipped, ids ascending
    np.testing.assert_allclose(auc, [HAND_AUC[u] for u in (3, 7, 9)], rtol=0, atol=1e-12)
    assert n_rows.tolist() == [3, 4, 5]


@pytest.mark.unit
def test_hand_computed_gauc_and_uauc():
    # GAUC weights by rows: (3*0 + 4*0.875 + 5*(5.5/6)) / 12
    expected_gauc = (3 * 0.0 + 4 * 0.875 + 5 * (5.5 / 6)) / 12
    expected_uauc = (0.0 + 0.875 + 5.5 / 6) / 3
    assert gauc(HAND_SCORES, HAND_LABELS, HAND_USERS) == pytest.approx(expected_gauc, abs=1e-12)
    assert uauc(HAND_SCORES, HAND_LABELS, HAND_USERS) == pytest.approx(expected_uauc, abs=1e-12)
    assert expected_gauc != pytest.approx(expected_uauc)


@pytest.mark.unit
def test_two_users_weights_make_gauc_differ_from_uauc():
    # user "a": 2 rows, perfectly ranked -> 1.0; user "b": 4 rows, reversed -> 0.0
    scores = [0.9, 0.1, 0.1, 0.2, 0.3, 0.4]
    labels = [1, 0, 1, 1, 0, 0]
    users = ["a", "a", "b", "b", "b", "b"]
    assert per_user_auc(scores, labels, users).users.tolist() == ["a", "b"]
    assert gauc(scores, labels, users) == pytest.approx(2 / 6)
    assert uauc(scores, labels, users) == pytest.approx(0.5)


@pytest.mark.unit
def test_all_tied_scores_give_half():
    assert gauc([0.3] * 4, [1, 0, 0, 1], [1] * 4) == 0.5
    # -0.0 and +0.0 are equal scores, so they tie too
    assert uauc(np.array([-0.0, 0.0], np.float32), [1, 0], [1, 1]) == 0.5
    assert uauc(np.array([0.0, -0.0], np.float64), [1, 0], [1, 1]) == 0.5


@pytest.mark.unit
def test_negative_and_infinite_scores_keep_their_order():
    scores = np.array([-np.inf, -3.5, -1e-30, 0.0, 2.0, np.inf], np.float32)
    users = np.zeros(6, np.int64)
    assert uauc(scores, [0, 0, 0, 1, 1, 1], users) == 1.0
    assert uauc(scores, [1, 1, 1, 0, 0, 0], users) == 0.0


@pytest.mark.unit
@pytest.mark.parametrize(
    "scores, labels, users",
    [
        ([0.1, 0.2, 0.3], [1, 1, 1], [1, 2, 3]),  # all positive
        ([0.1, 0.2, 0.3, 0.4], [0, 1, 1, 0], [1, 2, 3, 4]),  # one row per user
        ([], [], []),
    ],
)
def test_nan_when_no_user_qualifies(scores, labels, users):
    assert math.isnan(gauc(scores, labels, users))
    assert math.isnan(uauc(scores, labels, users))
    assert len(per_user_auc(scores, labels, users).users) == 0


@pytest.mark.unit
def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        per_user_auc([0.1, 0.2], [0, 1], [1])
    with pytest.raises(ValueError, match="binary"):
        per_user_auc([0.1, 0.2], [0, 2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        per_user_auc([0.1, float("nan")], [0, 1], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        per_user_auc(np.array([0.1, np.nan], np.float32), [0, 1], [1, 1])
    with pytest.raises(ValueError, match="one-dimensional"):
        per_user_auc(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)))


@pytest.mark.unit
def test_inputs_are_not_modified():
    scores = np.array([-0.0, 0.5, 0.2], np.float32)
    users = np.array([4, 4, 4])
    per_user_auc(scores, [1, 0, 1], users)
    assert np.signbit(scores[0]) and users.tolist() == [4, 4, 4]


# ---------------------------------------------------------------------------------------------
# agreement with sklearn on random data
# ---------------------------------------------------------------------------------------------


def _sklearn_per_user(scores, labels, users):
    from sklearn.metrics import roc_auc_score

    result = {}
    for user in np.unique(users):
        mask = users == user
        if len(np.unique(labels[mask])) == 2:
            result[user] = (roc_auc_score(labels[mask], scores[mask]), int(mask.sum()))
    return result


@pytest.mark.unit
@pytest.mark.parametrize(
    "score_kind",
    ["float32", "float64", "float64_rounded", "float16", "int", "constant"],
)
@pytest.mark.parametrize("user_kind", ["int", "int_wide", "str", "int8"])
def test_agrees_with_sklearn_per_user(score_kind, user_kind):
    rng = np.random.default_rng(zlib.crc32(f"{score_kind}/{user_kind}".encode()))
    n = 3000
    raw = rng.standard_normal(n)
    scores = {
        "float32": raw.astype(np.float32),
        "float64": raw,  # not float32-exact: dense-rank path
        "float64_rounded": np.round(raw, 1),  # many ties
        "float16": raw.astype(np.float16),
        "int": rng.integers(-3, 4, n),
        "constant": np.full(n, 0.25),
    }[score_kind]
    users = rng.integers(-40, 40, n)
    if user_kind == "int_wide":
        users = users * (2**40)  # too wide a range for the shift-only encoding
    elif user_kind == "str":
        users = np.array([f"u{u}" for u in users])
    elif user_kind == "int8":
        users = users.astype(np.int8)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    labels[users == users[0]] = 1.0  # one single-class user to skip

    got = per_user_auc(scores, labels, users)
    want = _sklearn_per_user(scores, labels, users)
    assert got.users.tolist() == sorted(want)
    assert got.users.dtype == users.dtype
    np.testing.assert_allclose(got.auc, [want[u][0] for u in got.users], rtol=0, atol=1e-12)
    assert got.n_rows.tolist() == [want[u][1] for u in got.users]

    auc_values = np.array([want[u][0] for u in sorted(want)])
    weights = np.array([want[u][1] for u in sorted(want)])
    assert gauc(scores, labels, users) == pytest.approx(
        float(np.sum(auc_values * weights) / weights.sum()), abs=1e-12
    )
    assert uauc(scores, labels, users) == pytest.approx(float(auc_values.mean()), abs=1e-12)


@pytest.mark.unit
def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    got = gauc(
        torch.tensor(HAND_SCORES), torch.tensor(HAND_LABELS, dtype=torch.float32),
        torch.tensor(HAND_USERS),
    )
    assert got == pytest.approx(gauc(HAND_SCORES, HAND_LABELS, HAND_USERS), abs=1e-7)


@pytest.mark.unit
def test_vectorised_on_a_million_rows():
    import time

    rng = np.random.default_rng(1)
    n = 1_000_000
    users = rng.integers(0, 50_000, n)
    scores = np.round(rng.random(n), 3).astype(np.float32)  # plenty of ties
    labels = (rng.random(n) < 0.2).astype(np.float32)
    start = time.perf_counter()
    value = gauc(scores, labels, users)
    assert time.perf_counter() - start < 5.0
    assert 0.45 < value < 0.55


# ---------------------------------------------------------------------------------------------
# RecBole integration
# ---------------------------------------------------------------------------------------------


def test_import_stays_light():
    code = (
        "import sys, recbole_mma4ctr.metrics as m; "
        "assert m.gauc([0.1, 0.9], [0, 1], [1, 1]) == 1.0; "
        "bad = [k for k in ('recbole', 'torch', 'sklearn') if k in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _is_registered():
    from recbole.evaluator import register as rb

    from recbole_mma4ctr import metrics

    return rb.metrics_dict.get("gauc") is metrics.GAUC


@pytest.fixture
def registered():
    """Register for the test; leave the registry as found (other tests may have registered)."""
    from recbole_mma4ctr import metrics

    already = _is_registered()
    metrics.register_metrics()
    yield metrics
    if not already:
        metrics.unregister_metrics()


@pytest.mark.unit
def test_register_metrics_is_idempotent_and_reversible():
    from recbole.evaluator import register as rb
    from recbole.utils import EvaluatorType

    from recbole_mma4ctr import metrics

    already = _is_registered()
    metrics.unregister_metrics()
    original_gauc = rb.metrics_dict["gauc"]
    assert rb.metric_types["gauc"] == EvaluatorType.RANKING  # RecBole's own ranking GAUC
    try:
        first = metrics.register_metrics()
        second = metrics.register_metrics()
        assert first == second
        assert first["gauc"] is metrics.GAUC and first["uauc"] is metrics.UAUC
        for name in ("gauc", "uauc"):
            assert rb.metrics_dict[name] is first[name]
            assert rb.metric_types[name] == EvaluatorType.VALUE
            assert "data.uid" in rb.metric_information[name]
            assert name not in rb.smaller_metrics
        assert metrics.GAUC.smaller is False
        # Config reads the very same objects
        from recbole.config import configurator

        assert configurator.metric_types is rb.metric_types
        assert configurator.smaller_metrics is rb.smaller_metrics
    finally:
        metrics.unregister_metrics()
    assert rb.metrics_dict["gauc"] is original_gauc
    assert rb.metric_types["gauc"] == EvaluatorType.RANKING
    assert "uauc" not in rb.metrics_dict and "uauc" not in rb.metric_types
    assert "uauc" not in rb.metric_information
    metrics.unregister_metrics()  # a second undo is a no-op
    assert rb.metrics_dict["gauc"] is original_gauc
    if already:
        metrics.register_metrics()


def _write_tiny_dataset(root, name="tiny"):
    rng = np.random.default_rng(7)
    folder = root / name
    folder.mkdir()
    lines = ["user_id:token\titem_id:token\tlabel:float\ttimestamp:float"]
    n_users, per_user, n_items = 8, 30, 25
    for row in range(n_users * per_user):
        user = row % n_users
        item = int(rng.integers(0, n_items))
        label = int(rng.random() < 0.4)
        lines.append(f"u{user}\ti{item}\t{label}\t{1000 + row}")
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n")
    return name


def _tiny_config(tmp_path, metrics=("AUC", "GAUC", "UAUC", "LogLoss"), valid_metric="GAUC"):
    # RecBole's Config as the project builds it (RecBole's own fails on numpy 2: compat.py)
    from recbole_mma4ctr.config import MMa4CTRConfig as Config

    name = _write_tiny_dataset(tmp_path)
    return Config(
        model="FM",
        dataset=name,
        config_dict={
            "data_path": str(tmp_path),
            "checkpoint_dir": str(tmp_path / "saved"),
            "load_col": {"inter": ["user_id", "item_id", "label", "timestamp"]},
            "train_neg_sample_args": None,
            "eval_args": {
                "split": {"RS": [0.8, 0.1, 0.1]},
                "order": "TO",
                "group_by": None,
                "mode": "labeled",
            },
            "metrics": list(metrics),
            "valid_metric": valid_metric,
            "metric_decimal_place": 12,
            "eval_batch_size": 7,  # several batches per evaluation
            "use_gpu": False,
            "show_progress": False,
            "state": "ERROR",
            "seed": 3,
        },
    )


def _prepared(config):
    from recbole.data import create_dataset, data_preparation
    from recbole.model.context_aware_recommender import FM
    from recbole.utils import init_seed

    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = FM(config, train_data.dataset).to(config["device"])
    return model, train_data, test_data


def test_recbole_config_accepts_the_metrics(registered, tmp_path):
    from recbole.utils import EvaluatorType

    config = _tiny_config(tmp_path)
    assert config["eval_type"] == EvaluatorType.VALUE
    assert config["valid_metric_bigger"] is True
    other = tmp_path / "other"
    other.mkdir()
    config = _tiny_config(other, metrics=("UAUC", "LogLoss"), valid_metric="UAUC")
    assert config["eval_type"] == EvaluatorType.VALUE
    assert config["valid_metric_bigger"] is True


def test_evaluator_with_user_aware_collector_matches_pure_functions(registered, tmp_path):
    import torch
    from recbole.evaluator import Evaluator

    from recbole_mma4ctr.metrics import UID_KEY, UserAwareCollector

    config = _tiny_config(tmp_path)
    model, train_data, test_data = _prepared(config)
    model.eval()

    collector = UserAwareCollector(config)
    collector.data_collect(train_data)
    scores, labels, users = [], [], []
    n_batches = 0
    with torch.no_grad():
        for interaction, _, positive_u, positive_i in test_data:
            batch_scores = model.predict(interaction)
            collector.eval_batch_collect(batch_scores, interaction, positive_u, positive_i)
            scores.append(batch_scores.numpy())
            labels.append(interaction[config["LABEL_FIELD"]].numpy())
            users.append(interaction[config["USER_ID_FIELD"]].numpy())
            n_batches += 1
    assert n_batches > 1
    struct = collector.get_data_struct()
    assert UID_KEY in struct
    assert UID_KEY not in collector.data_struct  # reset for the next evaluation

    scores, labels, users = map(np.concatenate, (scores, labels, users))
    np.testing.assert_array_equal(struct.get(UID_KEY).numpy(), users)
    expected_gauc = gauc(scores, labels, users)
    expected_uauc = uauc(scores, labels, users)
    assert not math.isnan(expected_gauc)

    result = Evaluator(config).evaluate(struct)
    assert set(result) == {"auc", "gauc", "uauc", "logloss"}
    assert result["gauc"] == pytest.approx(expected_gauc, abs=1e-9)
    assert result["uauc"] == pytest.approx(expected_uauc, abs=1e-9)


def test_user_aware_collector_collects_recboles_tensors(registered, tmp_path):
    """Batches kept in a list and concatenated once: the tensors RecBole's own collector gives."""
    import torch
    from recbole.evaluator import Collector

    from recbole_mma4ctr.metrics import UserAwareCollector

    config = _tiny_config(tmp_path)
    model, train_data, test_data = _prepared(config)
    model.eval()
    ours, stock = UserAwareCollector(config), Collector(config)
    for evaluation in range(2):   # the second evaluation starts from a reset collector, as RecBole's
        with torch.no_grad():
            for interaction, _, positive_u, positive_i in test_data:
                scores = model.predict(interaction)
                for collector in (ours, stock):
                    collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
        mine, theirs = ours.get_data_struct(), stock.get_data_struct()
        for key in ("rec.score", "data.label"):
            assert mine.get(key).dtype == theirs.get(key).dtype
            assert torch.equal(mine.get(key), theirs.get(key)), (evaluation, key)
            assert key not in ours.data_struct


def test_trainer_evaluate_with_swapped_collector(registered, tmp_path, monkeypatch):
    from recbole.trainer import Trainer

    from recbole_mma4ctr.metrics import UID_KEY, UserAwareCollector

    monkeypatch.chdir(tmp_path)  # RecBole's Trainer writes log_tensorboard/ in the cwd
    config = _tiny_config(tmp_path)
    model, train_data, test_data = _prepared(config)
    trainer = Trainer(config, model)
    trainer.eval_collector = UserAwareCollector(config)
    trainer.eval_collector.data_collect(train_data)

    first = trainer.evaluate(test_data, load_best_model=False)
    second = trainer.evaluate(test_data, load_best_model=False)
    assert first == second  # user ids do not pile up across evaluations
    assert UID_KEY not in trainer.eval_collector.data_struct

    model.eval()
    interaction = test_data._dataset.inter_feat
    scores = model.predict(interaction).detach().numpy()
    labels = interaction[config["LABEL_FIELD"]].numpy()
    users = interaction[config["USER_ID_FIELD"]].numpy()
    assert first["gauc"] == pytest.approx(gauc(scores, labels, users), abs=1e-6)
    assert first["uauc"] == pytest.approx(uauc(scores, labels, users), abs=1e-6)


@pytest.mark.unit
def test_plain_recbole_collector_gives_a_clear_error(registered, tmp_path):
    import torch
    from recbole.evaluator import Collector, Evaluator

    config = _tiny_config(tmp_path)
    model, train_data, test_data = _prepared(config)
    collector = Collector(config)
    with torch.no_grad():
        for interaction, _, positive_u, positive_i in test_data:
            collector.eval_batch_collect(
                model.predict(interaction), interaction, positive_u, positive_i
            )
    with pytest.raises(RuntimeError, match="UserAwareCollector"):
        Evaluator(config).evaluate(collector.get_data_struct())
