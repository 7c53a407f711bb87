"""The tuned comparison (issue 23, part 1): every model tuned with the same budget on validation,
then run with its chosen settings and every seed.

Known answers: the edge rule on hand-made dimensions; a planted tuning whose test-best trial is
not its valid-best one (the valid-best one's settings are chosen); one tiny tuned comparison of
two models on Ray (same budget in both tunings, each final record carrying the settings of its
tuning's valid-best trial), and its rerun, which tunes and trains nothing again.
"""

import json
from pathlib import Path

import pytest

from conftest import copy_atomic, remove_ray_temp, run_settings
from recbole_mma4ctr.cells import CellError
from recbole_mma4ctr.experiment.tune import Dimension, read_hyper_file
from recbole_mma4ctr.experiment.tuned import chosen_settings, hyper_file_of, on_edge, tuning_budget

NAME = "tuned"


def test_every_model_of_the_feature_fair_set_has_a_search_space_covering_what_matters():
    from recbole_mma4ctr.experiment.compare import parse_models

    for model in parse_models("feature_fair"):
        names = {d.name for d in read_hyper_file(hyper_file_of(model))}
        assert "learning_rate" in names and "train_batch_size" in names, model
        if model != "MMa4CTR":                       # MMa4CTR has no embedding table
            assert "embedding_size" in names, model
        assert names & {"weight_decay", "reg_weight", "dropout_prob"}, model
    assert hyper_file_of("DeepFM+mm") == hyper_file_of("DeepFM")
    assert hyper_file_of("DCNV2+mm").name == "DCNV2.hyper"
    with pytest.raises(CellError, match=r"WideDeep has no search space .*WideDeep.hyper"):
        hyper_file_of("WideDeep")


def test_the_budget_is_one_for_every_model_and_bad_counts_are_refused():
    budget = tuning_budget("4", 3, {"grace_period": "1", "cpus_per_run": "1"})
    assert budget == {"trials": 4, "epochs": 3, "grace_period": "1", "reduction_factor": "2", "metric": None}
    for bad in ("0", "two", None):
        with pytest.raises(CellError, match="--tune_trials"):
            tuning_budget(bad, 3, {})


@pytest.mark.parametrize("key", ["num_samples", "params_file"])
def test_tune_s_own_sample_count_and_space_are_refused(key):
    from recbole_mma4ctr.experiment.tuned import run_tuned_comparison

    with pytest.raises(CellError, match=f"--{key} is --tune's"):
        run_tuned_comparison(["MMa4CTR"], "wechat", "2", overrides={key: "4"})


@pytest.mark.parametrize("dimension, value, where", [
    (Dimension("lr", "loguniform", [-9.2, -4.6], 1), 1e-4, "low edge"),
    (Dimension("lr", "loguniform", [-9.2, -4.6], 1), 0.0095, "high edge"),
    (Dimension("lr", "loguniform", [-9.2, -4.6], 1), 1e-3, "inside"),
    (Dimension("p", "uniform", [0.0, 0.5], 1), 0.02, "low edge"),
    (Dimension("p", "uniform", [0.0, 0.5], 1), 0.25, "inside"),
    (Dimension("b", "choice", [4096, 1024, 2048], 1), 1024, "low edge"),
    (Dimension("b", "choice", [4096, 1024, 2048], 1), 4096, "high edge"),
    (Dimension("b", "choice", [4096, 1024, 2048], 1), 2048, "inside"),
    (Dimension("m", "choice", [[64], [128, 128], [256]], 1), [256], "unordered"),
    (Dimension("f", "grid", ["vat_concat", "textual"], 1), "textual", "unordered"),
    (Dimension("h", "choice", [0, 5], 1), 5, "high edge"),
])
def test_a_chosen_value_on_the_edge_of_its_range_is_flagged(dimension, value, where):
    assert on_edge(dimension, value) == where


def test_the_settings_come_from_the_valid_best_trial_not_the_test_best():
    """Planted: trial b has the best test AUC, trial a the best validation AUC (tune.py's 'best')."""
    dimensions = [Dimension("learning_rate", "loguniform", [-9.2, -4.6], 1),
                  Dimension("train_batch_size", "choice", [1024, 2048], 2)]
    trials = [{"trial": "a", "learning_rate": 0.001, "train_batch_size": 1024, "best_auc": 0.71, "test_auc": 0.60,
               "status": "completed"},
              {"trial": "b", "learning_rate": 0.004, "train_batch_size": 2048, "best_auc": 0.69, "test_auc": 0.75,
               "status": "completed"}]
    summary = {"metric": "auc", "trials": trials, "best": trials[0]}
    assert chosen_settings(summary, dimensions) == {"learning_rate": 0.001, "train_batch_size": 1024}
    assert chosen_settings({"metric": "auc", "trials": trials, "best": None}, dimensions) == {}


# ------------------------------------------------------------------ one tiny tuned comparison on Ray


def record_counts(folder: Path) -> dict:
    """Records in the comparison folder and in each tuning folder."""
    return {str(path.relative_to(folder)): len(list(path.glob(f"*-{NAME}-*.json")))
            for path in [folder, *folder.glob("tuning/*/tune-*")]}


@pytest.fixture(scope="module")
def tuned_run(tiny_atomic, tmp_path_factory):
    from recbole_mma4ctr.experiment.tuned import run_tuned_comparison

    source, _ = tiny_atomic
    root = Path(tmp_path_factory.mktemp("tuned"))
    copy_atomic(source, root / "data", NAME)
    settings = run_settings(root, data_path=root / "data", state="warning", ray_tmp=f"/tmp/rmc-tuned-{root.name}")
    engine = {"ray_tmp": settings.pop("ray_tmp"), "grace_period": "1"}
    args = (["MMa4CTR", "DeepFM"], NAME, "2", "1", "honest", None, settings, [2024], engine)
    try:
        first = run_tuned_comparison(*args)
        counted = record_counts(first[0])
        second = run_tuned_comparison(*args)
        yield root, first, second, counted
    finally:
        remove_ray_temp(Path(engine["ray_tmp"]))


@pytest.mark.ray
def test_every_model_is_tuned_with_the_same_budget_and_runs_its_valid_best_settings(tuned_run):
    from recbole_mma4ctr.record import read_record

    root, (folder, failed), _, _ = tuned_run
    assert failed == []
    tuning = json.loads((folder / "tuning.json").read_text())["models"]
    assert [row["model"] for row in tuning] == ["MMa4CTR", "DeepFM"]
    assert tuning[0]["budget"] == tuning[1]["budget"] == {"trials": 2, "epochs": 1, "grace_period": "1",
                                                          "reduction_factor": "2", "metric": None}
    assert [Path(row["params_file"]).name for row in tuning] == ["MMa4CTR.hyper", "DeepFM.hyper"]
    finals = [read_record(path) for path in folder.glob(f"*-{NAME}-*.json")]
    assert sorted(r["model"] for r in finals) == ["DeepFM", "MMa4CTR"]
    for row in tuning:
        assert row["trials_run"] <= 2 and row["trials_finished"] >= 1
        trials = [read_record(path) for path in Path(row["folder"]).glob(f"tune-*/*-{NAME}-*.json")]
        finished = [t for t in trials if t["status"] == "ok"]
        assert all(t["test"] == {} and t["test_evaluated"].startswith("never") for t in finished)
        choosable = [t for t in trials if t["status"] in ("ok", "stopped")]    # finished, or stopped by ASHA
        valid_best = max(choosable, key=lambda t: max(h["valid"]["auc"] for h in t["history"] if h.get("valid")))
        assert all(valid_best["config"][k] == v for k, v in row["chosen"].items())
        final = next(r for r in finals if r["model"] == row["model"])
        assert final["tuned"]["settings"] == row["chosen"]
        assert all(final["config"][k] == v for k, v in row["chosen"].items())
        assert final["tuned"]["budget"] == row["budget"]
    table = (folder / "tuning.md").read_text()
    assert "2 trials x <= 1 epochs" in table and "MMa4CTR.hyper" in table and "DeepFM.hyper" in table


@pytest.mark.ray
def test_a_rerun_tunes_and_trains_nothing_again(tuned_run):
    root, (folder, _), (again, failed), counted = tuned_run
    assert again == folder and failed == []
    assert record_counts(folder) == counted and counted["."] == 2 and len(counted) == 3
    first = json.loads((folder / "tuning.json").read_text())["models"]
    assert [row["chosen"] for row in first] == [row["chosen"] for row in
                                                json.loads((again / "tuning.json").read_text())["models"]]
    records = list(folder.glob(f"*-{NAME}-*.json"))
    assert len(records) == 2                           # one final cell per model and seed, none run twice
    for row in first:
        assert len(list(Path(row["folder"]).glob("tune-*/trials.json"))) == 1


def test_a_run_with_test_after_training_false_never_scores_the_test_split(tiny_atomic, tmp_path):
    from recbole_mma4ctr.cells import make_cell
    from recbole_mma4ctr.errors import UsageError
    from recbole_mma4ctr.record import read_record, write_record
    from recbole_mma4ctr.run import run_cell

    source, _ = tiny_atomic
    copy_atomic(source, tmp_path / "data", NAME)
    settings = run_settings(tmp_path, data_path=tmp_path / "data", state="warning", epochs=1,
                            test_after_training="false")
    record, predictions = run_cell(make_cell("MMa4CTR", NAME, None, settings, prepare=False))
    assert record["test"] == {} and predictions is None and record["test_rows"] is None
    assert record["test_evaluated"].startswith("never") and record["best_valid"]["auc"] > 0
    assert read_record(write_record(record, tmp_path / "results"))["test"] == {}
    with pytest.raises(UsageError, match="give one of them"):
        run_cell(make_cell("MMa4CTR", NAME, None, settings, marks=[1], prepare=False))
