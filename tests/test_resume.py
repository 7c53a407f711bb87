"""Run-level guarantees of the training loop, through ``run_cell`` on the tiny sample (no Ray).

- A cell killed after epoch k and resumed from its checkpoint gives the record of the
  uninterrupted cell exactly (test metrics, every test score bit for bit, validation history,
  best-valid result), for every model family: MMa4CTR, BPR, NGCF, FPMC, a sequential CE model
  (BERT4Rec), DIN and a ``+mm`` model (DeepFM+mm).
- A run saved after it stopped (plateau, or its last epoch) is not trained on when resumed, and
  its final test still reads the best-validation weights.
- The same seed gives the identical record in a new process.
- Flipping every test label changes the test numbers and nothing of training or selection.
- Validation scores that are all equal stop the run with an error naming the likely causes.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, copy_atomic, run_settings
from recbole_mma4ctr.cells import make_cell
from recbole_mma4ctr.errors import TrainingError
from recbole_mma4ctr.run import run_cell

TIMING = ("train_seconds", "valid_seconds", "seconds")


class Killed(Exception):
    """Stands for the kill of a worker right after its checkpoint was stored."""


class MemoryCheckpoints:
    """``run_cell``'s checkpoint sink, in memory: what the engine's ledger does, without Ray."""

    def __init__(self):
        self.blob, self.epochs = None, []

    def load(self):
        return self.blob

    def save(self, epoch, blob):
        self.blob = blob
        self.epochs.append(epoch)


@pytest.fixture(scope="module")
def data(tiny_atomic, tmp_path_factory):
    source, _ = tiny_atomic
    root = tmp_path_factory.mktemp("resume")
    shutil.copytree(source, root / "data" / "wechat")
    return root


def cell(data, model, marks=None, **extra):
    settings = run_settings(data, data_path=data / "data", **extra)
    return make_cell(model, "wechat", None, settings, marks=marks, kind="compare", prepare=False)


def without_timing(value):
    """A record part with its wall-clock fields removed (they differ between any two runs)."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def outcome(record, predictions):
    """What a resume or a rerun must reproduce exactly."""
    return {
        "test": record["test"], "best_valid": record["best_valid"], "best_valid_score": record["best_valid_score"],
        "history": without_timing(record["history"]), "test_by_epoch": without_timing(record["test_by_epoch"]),
        "steps": record["steps"], "epochs_run": record["epochs_run"], "stopped_on": record["stopped_on"],
        "valid_plateau": record["valid_plateau"], "interrupts": record["interrupts"], "test_rows": record["test_rows"],
        "raw_scores": hashlib.sha256(np.ascontiguousarray(predictions["raw_score"]).tobytes()).hexdigest(),
    }


def killed_then_resumed(make, kill_after):
    """Run ``make()``'s cell until its checkpoint after epoch ``kill_after`` is stored, kill it
    there, then run the same cell again from that checkpoint; returns the resumed run's result."""
    store = MemoryCheckpoints()

    def kill(progress):
        if progress["epoch"] == kill_after:
            raise Killed()

    with pytest.raises(Killed):
        run_cell(make(), on_epoch=kill, checkpoints=store)
    assert store.epochs[-1] == kill_after
    return run_cell(make(), checkpoints=store)


# Small enough that each family's three runs take seconds on the tiny sample. MMa4CTR halves its
# learning rate every 2 epochs here, so the schedule's state matters; BPR tests after every epoch
# (marks), so the epoch-mark tests carried in the checkpoint matter.
FAMILIES = {
    "MMa4CTR": dict(settings={"profile_length": 5, "train_batch_size": 2048, "lr_halving_epochs": 2}, epochs=3, kill_after=1),
    "BPR": dict(settings={"train_batch_size": 1024}, marks=[1, 2, 3], kill_after=2),
    "NGCF": dict(settings={"train_batch_size": 2048, "embedding_size": 16, "hidden_size_list": "[16]"}, epochs=2, kill_after=1),
    "FPMC": dict(settings={"train_batch_size": 1024, "embedding_size": 16}, epochs=2, kill_after=1),
    "BERT4Rec": dict(settings={"train_batch_size": 1024, "MAX_ITEM_LIST_LENGTH": 5, "hidden_size": 16, "inner_size": 32,
                               "n_layers": 1, "n_heads": 1}, epochs=2, kill_after=1),
    "DIN": dict(settings={"train_batch_size": 2048, "MAX_ITEM_LIST_LENGTH": 5, "mlp_hidden_size": "[16,16]"}, epochs=2,
                kill_after=1),
    "DeepFM+mm": dict(settings={"train_batch_size": 2048, "mlp_hidden_size": "[16,16]"}, epochs=2, kill_after=1),
}


@pytest.mark.parametrize("model", list(FAMILIES))
def test_a_resumed_cell_equals_the_uninterrupted_one_exactly(data, model):
    family = FAMILIES[model]
    settings = dict(family["settings"])
    if "epochs" in family:
        settings["epochs"] = family["epochs"]

    def make():
        return cell(data, model, marks=family.get("marks"), **settings)

    uninterrupted = outcome(*run_cell(make()))
    resumed_record, resumed_predictions = killed_then_resumed(make, family["kill_after"])
    assert resumed_record["resumed_from_epoch"] == family["kill_after"]
    assert outcome(resumed_record, resumed_predictions) == uninterrupted
    assert uninterrupted["epochs_run"] > family["kill_after"] and uninterrupted["stopped_on"] == "epochs"


def scripted_validation(monkeypatch, scores):
    """Validation AUC by epoch (``scores[epoch]``), whatever the model learned; the epoch is read
    from the trainer's history, so a resumed run continues the script where it was."""
    from recbole_mma4ctr.trainer import Trainer

    def valid_epoch(self, valid_data, show_progress=False):
        score = scores[len(self.history)]
        return score, {"auc": score}

    monkeypatch.setattr(Trainer, "_valid_epoch", valid_epoch)


@pytest.mark.parametrize("train_to", ["epochs", "plateau"])
def test_a_run_saved_after_it_stopped_resumes_without_training_and_tests_the_best_weights(data, monkeypatch, train_to):
    # epoch 1 is the best of two; "epochs": the last of 2 epochs; "plateau": patience 1 stops after epoch 2 of up to 5
    scripted_validation(monkeypatch, [0.70, 0.60, 0.50, 0.40, 0.30])
    settings = {"train_batch_size": 2048}
    if train_to == "epochs":
        settings["epochs"] = 2
    else:
        settings.update(train_to="plateau", plateau_patience=1, plateau_step_budget=50, plateau_min_steps_per_epoch=10)

    def make():
        return cell(data, "BPR", **settings)

    uninterrupted = outcome(*run_cell(make()))
    assert uninterrupted["epochs_run"] == 2 and uninterrupted["stopped_on"] == train_to
    assert uninterrupted["valid_plateau"]["best_epoch"] == 1
    resumed_record, resumed_predictions = killed_then_resumed(make, 2)
    assert resumed_record["resumed_from_epoch"] == 2
    assert outcome(resumed_record, resumed_predictions) == uninterrupted


SAME_SEED_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[2])
from recbole_mma4ctr.cells import make_cell
from recbole_mma4ctr.run import run_cell
from test_resume import outcome
settings = json.loads(sys.argv[1])
print("RESULT " + json.dumps({model: outcome(*run_cell(make_cell(model, "wechat", None, settings, kind="compare", prepare=False)))
                              for model in ("BPR", "MMa4CTR")}))
"""


def test_the_same_seed_gives_the_identical_record_in_a_new_process(data):
    settings = run_settings(data, data_path=data / "data", epochs=2, train_batch_size=2048, profile_length=5)
    here = {model: outcome(*run_cell(make_cell(model, "wechat", None, settings, kind="compare", prepare=False)))
            for model in ("BPR", "MMa4CTR")}
    environment = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SAME_SEED_SCRIPT, json.dumps(settings), str(REPO / "tests")],
                          capture_output=True, text=True, cwd=data, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    there = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert there == json.loads(json.dumps(here)) and here["BPR"]["raw_scores"] != here["MMa4CTR"]["raw_scores"]


def flip_labels(folder, predictions) -> int:
    """Flip the label of every row of ``folder/tw.inter`` that the run scored as a test row
    (matched by user, item and timestamp); returns how many were flipped."""
    import pandas as pd

    path = folder / "tw.inter"
    inter = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    user, item, timestamp, label = "user_id:token", "item_id:token", "timestamp:float", "label:float"
    tested = set(zip(predictions["user"].astype(str), predictions["item"].astype(str), predictions["timestamp"].astype(float)))
    rows = pd.Series([(u, i, float(t)) in tested for u, i, t in zip(inter[user], inter[item], inter[timestamp])])
    inter.loc[rows, label] = inter.loc[rows, label].map({"0": "1", "1": "0"})
    assert inter[label].isin(["0", "1"]).all()
    inter.to_csv(path, sep="\t", index=False)
    return int(rows.sum())


def test_flipping_every_test_label_changes_nothing_of_training_or_selection(tiny_atomic, tmp_path):
    source, _ = tiny_atomic
    settings = {"profile_length": 5, "train_batch_size": 2048}
    runs = {}
    for name in ("as_given", "flipped"):
        copy_atomic(source, tmp_path / name, "tw")      # a dataset of the user's own (no manifest), read as given
        if name == "flipped":
            assert flip_labels(tmp_path / name / "tw", runs["as_given"][1]) == len(runs["as_given"][1]["label"])
        runs[name] = run_cell(make_cell("MMa4CTR", "tw", None, run_settings(tmp_path, data_path=tmp_path / name, **settings),
                                        marks=[1, 2, 3], kind="compare"))
    (original, predictions), (flipped, flipped_predictions) = runs["as_given"], runs["flipped"]
    # the test rows are the same rows with the opposite labels, and the test numbers moved
    assert np.array_equal(flipped_predictions["label"], 1 - predictions["label"])
    assert flipped["test"]["auc"] == pytest.approx(1 - original["test"]["auc"], abs=2e-4)
    assert [e["auc"] for e in flipped["test_by_epoch"]] != [e["auc"] for e in original["test_by_epoch"]]
    # ... and training and selection did not: bit-identical validation, best epoch, best valid, test scores
    assert without_timing(flipped["history"]) == without_timing(original["history"])
    assert flipped["valid_plateau"] == original["valid_plateau"]
    assert flipped["best_valid"] == original["best_valid"] and flipped["best_valid_score"] == original["best_valid_score"]
    assert np.array_equal(flipped_predictions["raw_score"], predictions["raw_score"])


def test_validation_scores_that_are_all_equal_stop_the_run_naming_the_likely_causes(tiny_atomic, tmp_path, capsys):
    from recbole_mma4ctr import cli
    from recbole_mma4ctr.record import read_record

    source, _ = tiny_atomic
    copy_atomic(source, tmp_path / "data", "tw")
    # a learning rate of 1000 saturates MMa4CTR's output: every validation row scores 0 after epoch 1
    settings = run_settings(tmp_path, data_path=tmp_path / "data", epochs=3, train_batch_size=2048, profile_length=5,
                            valid_interrupt=False, learning_rate=1000)
    assert cli.main(["--model=MMa4CTR", "--dataset=tw", *[f"--{k}={v}" for k, v in settings.items()]]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: validation after epoch 1: all 3,000 rows got the same score (0), so AUC is 0.5")
    assert "features saturated" in error and "learning_rate=1000" in error
    records = [read_record(path) for path in (tmp_path / "results").glob("*.json")]
    assert [(r["status"], r["error"].split(":")[0]) for r in records] == [("failed", "TrainingError")]
    # with the validation interrupt on, the saturated epoch is retried at half the learning rate first
    with pytest.raises(TrainingError, match="validation after epoch 1: all 3,000 rows got the same score"):
        run_cell(make_cell("MMa4CTR", "tw", None, {**settings, "valid_interrupt": True, "valid_interrupt_max_retries": 1,
                                                    "learning_rate": 4000}, kind="compare"))
