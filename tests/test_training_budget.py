"""Training length: step counting, the step budget, the validation plateau (train_to: plateau)
and the fingerprint of the test rows a record states."""

import numpy as np
import pytest

from conftest import copy_atomic, run_settings
from recbole_mma4ctr.errors import UsageError
from recbole_mma4ctr.record import scored_rows_digest
from recbole_mma4ctr.run import run_recbole_mma4ctr, valid_plateau


@pytest.fixture
def data_settings(tiny_atomic, tmp_path):
    source, _ = tiny_atomic
    copy_atomic(source, tmp_path / "data", "tw")   # read as given: a "wechat" folder would be regenerated at the default scale
    return lambda **extra: run_settings(tmp_path, data_path=tmp_path / "data", **extra)


def scripted_validation(monkeypatch, scores):
    """Make every validation return the next of ``scores`` (as AUC), whatever the model learned."""
    from recbole_mma4ctr.trainer import Trainer

    remaining = list(scores)

    def valid_epoch(self, valid_data, show_progress=False):
        score = remaining.pop(0)
        return score, {"auc": score}

    monkeypatch.setattr(Trainer, "_valid_epoch", valid_epoch)


def test_plateau_stops_after_patience_validations_without_improvement(data_settings, monkeypatch):
    # validation improves at epochs 1-3, then 4 and 5 are worse: with patience 2 training ends after epoch 5
    scripted_validation(monkeypatch, [0.60, 0.70, 0.72, 0.71, 0.69, 0.80, 0.90])
    record = run_recbole_mma4ctr("MMa4CTR", "tw", None, data_settings(
        train_to="plateau", plateau_patience=2, plateau_step_budget=100_000, plateau_min_steps_per_epoch=50))
    assert record["stopped_on"] == "plateau" and record["epochs_run"] == 5
    assert record["valid_plateau"] == {"best_epoch": 3, "best_at_step": 3 * record["steps_per_epoch"],
                                       "validations_after_best": 2, "patience": 2, "reached": True}
    assert record["best_valid_score"] == pytest.approx(0.72)
    assert record["steps"] == 5 * record["steps_per_epoch"]
    # the batch size (8192) was lowered so an epoch has at least 50 steps on this training split
    train_rows = record["split_sizes"]["train"]
    assert train_rows // 50 < 8192
    assert record["train_batch_size"] == train_rows // 50 and record["steps_per_epoch"] >= 50
    assert record["config"]["train_batch_size"] == record["train_batch_size"]
    assert [entry["steps"] for entry in record["history"]] == [k * record["steps_per_epoch"] for k in range(1, 6)]


def count_optimizer_steps(monkeypatch) -> list:
    """Every optimizer step taken from now on appends to the returned list (RecBole's Adam)."""
    import torch

    taken = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        taken.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return taken


def test_step_budget_ends_training_at_exactly_the_budget_and_says_so(data_settings, monkeypatch):
    taken = count_optimizer_steps(monkeypatch)
    record = run_recbole_mma4ctr("MMa4CTR", "tw", None, data_settings(
        train_to="plateau", plateau_patience=50, plateau_step_budget=120, plateau_min_steps_per_epoch=50))
    per_epoch = record["steps_per_epoch"]
    assert 120 % per_epoch != 0            # the budget ends inside an epoch
    assert record["stopped_on"] == "step budget" and record["steps"] == 120 == len(taken)
    assert record["epochs_run"] == -(-120 // per_epoch)
    assert [entry["steps"] for entry in record["history"]] == [per_epoch * k for k in range(1, 120 // per_epoch + 1)] + [120]
    assert "valid" in record["history"][-1]   # the partial epoch is validated like any other


def test_a_step_budget_smaller_than_an_epoch_stops_inside_the_first(data_settings, monkeypatch):
    taken = count_optimizer_steps(monkeypatch)
    record = run_recbole_mma4ctr("MMa4CTR", "tw", None, data_settings(epochs=3, step_budget=2,
                                                                            train_batch_size=2048))
    assert record["steps_per_epoch"] > 2
    assert (record["steps"], len(taken), record["epochs_run"], record["stopped_on"]) == (2, 2, 1, "step budget")


def test_fixed_epochs_say_epochs_and_whether_validation_was_still_improving(data_settings, monkeypatch):
    scripted_validation(monkeypatch, [0.60, 0.65, 0.70])
    record = run_recbole_mma4ctr("MMa4CTR", "tw", None, data_settings(epochs=3))
    assert record["stopped_on"] == "epochs" and record["train_to"] == "epochs"
    assert record["valid_plateau"]["reached"] is False and record["valid_plateau"]["best_epoch"] == 3
    assert record["steps"] == 3 * record["steps_per_epoch"]


def test_marks_and_plateau_are_refused_together(data_settings):
    with pytest.raises(UsageError, match="give one of them"):
        run_recbole_mma4ctr("MMa4CTR", "tw", None, data_settings(train_to="plateau"), marks=[1, 2])


@pytest.mark.unit
def test_valid_plateau_counts_validations_after_the_best_and_skips_interrupted_epochs():
    history = [{"epoch": 0, "valid": {}, "best": True, "steps": 10}, {"epoch": 1, "valid": {}, "interrupted": True},
               {"epoch": 1, "valid": {}, "best": True, "steps": 30}, {"epoch": 2, "valid": {}, "steps": 40}]
    assert valid_plateau(history, 1) == {"best_epoch": 2, "best_at_step": 30, "validations_after_best": 1,
                                         "patience": 1, "reached": True}
    assert valid_plateau(history, 2)["reached"] is False
    assert valid_plateau([{"epoch": 0, "train_loss": 1.0}], 2) is None   # never validated


@pytest.mark.unit
def test_rows_digest_ignores_row_order_and_sees_any_changed_row():
    rng = np.random.default_rng(0)
    rows = {"user": np.array(["u1", "u2", "u3", "u1"]), "item": np.array(["a", "b", "c", "d"]),
            "timestamp": np.array([1.0, 2.0, 3.0, 4.0]), "label": np.array([0.0, 1.0, 0.0, 1.0]),
            "score": rng.random(4)}
    order = np.array([2, 0, 3, 1])
    shuffled = {name: values[order] for name, values in rows.items()}
    shuffled["score"] = rng.random(4)            # scores are not part of the test set
    assert scored_rows_digest(rows) == scored_rows_digest(shuffled)
    assert scored_rows_digest(rows)["rows"] == 4
    for column, value in (("label", 0.0), ("item", "z"), ("user", "u9"), ("timestamp", 9.0)):
        changed = {name: values.copy() for name, values in rows.items()}
        changed[column][1] = value
        assert scored_rows_digest(changed)["sha256"] != scored_rows_digest(rows)["sha256"], column
    assert scored_rows_digest({name: values[:3] for name, values in rows.items()}) != scored_rows_digest(rows)


@pytest.mark.unit
def test_rows_digest_is_the_sha256_of_the_sorted_rows_hashed_in_parts(monkeypatch):
    import hashlib

    import recbole_mma4ctr.record as record

    rows = {"user": np.array(["u2", "u1", "u1"]), "item": np.array(["b", "c", "a"]),
            "timestamp": np.array([2.0, 3.0, 1.0]), "label": np.array([1.0, 0.0, 0.0]), "score": np.zeros(3)}
    expected = hashlib.sha256(b"u1\ta\t1.0\t0.0\nu1\tc\t3.0\t0.0\nu2\tb\t2.0\t1.0\n").hexdigest()
    assert scored_rows_digest(rows)["sha256"] == expected
    monkeypatch.setattr(record, "DIGEST_ROWS", 2)
    assert scored_rows_digest(rows)["sha256"] == expected


def test_two_models_on_one_split_state_the_same_test_rows(data_settings):
    first = run_recbole_mma4ctr("MMa4CTR", "tw", None, data_settings(epochs=1))
    second = run_recbole_mma4ctr("BPR", "tw", None, data_settings(epochs=1, seed=7))
    assert first["test_rows"] == second["test_rows"] and first["test_rows"]["rows"] == first["split_sizes"]["test"]
