"""--tune and --study=: Ray Tune over a hyper file, trial tables, best.yaml, failed trials, the
paper's studies cut down; and ray stays out of every other path."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, remove_ray_temp

TINY = "--synthetic_scale=tiny"


def run(workdir, *arguments, timeout=400, env=None):
    """The command line in ``workdir``, with HOME there too (nothing may land in the real home)."""
    env = {**os.environ, "HOME": str(workdir), **(env or {})}
    command = [sys.executable, str(REPO / "run_recbole_mma4ctr.py"), *arguments]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)


def ok(done):
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def best_valid_auc(trial):
    """The best validation AUC of a trial as its record holds it: the record's best_valid when the
    trial finished, the best of its validations when ASHA stopped it."""
    record = json.loads(Path(trial["record"]).read_text())
    if record["status"] == "ok":
        return record["best_valid"]["auc"]
    return max(entry["valid"]["auc"] for entry in record["history"] if entry.get("valid") and not entry.get("interrupted"))


def recorded_test_auc(row, epoch):
    """A study row's record's test AUC after ``epoch``."""
    record = json.loads(Path(row["record"]).read_text())
    return next(entry["auc"] for entry in record["test_by_epoch"] if entry["epoch"] == epoch)


# ---- parsing and refusals (no Ray) -----------------------------------------------------------------
@pytest.mark.unit
def test_hyper_file_kinds_and_errors(tmp_path):
    from recbole_mma4ctr.experiment.tune import TuneError, distinct_values, read_hyper_file

    good = tmp_path / "good.hyper"
    good.write_text("# comment\n\nlearning_rate loguniform -8,0\ntrain_batch_size choice [1024,4096]\n"
                    "mlp_hidden_size choice ['[64,64]','[128,32,4]']\ndropout_prob uniform 0,0.5\n"
                    "embedding_size quniform 16,64,16\nfusion grid ['vat_concat', 'vt_cross']\n")
    dims = {d.name: d for d in read_hyper_file(good)}
    assert dims["learning_rate"].kind == "loguniform" and dims["learning_rate"].values == [-8.0, 0.0]
    assert dims["train_batch_size"].values == [1024, 4096]
    assert dims["mlp_hidden_size"].values == [[64, 64], [128, 32, 4]]   # RecBole's quoted lists become lists
    assert dims["fusion"].values == ["vat_concat", "vt_cross"]
    assert distinct_values(dims["embedding_size"]) == [16, 32, 48, 64]    # whole numbers: q is one
    assert distinct_values(dims["dropout_prob"]) is None
    for text, message in [("learning_rate gaussian 0,1", "line 1: unknown kind"),
                          ("x uniform 1", "line 1: uniform needs 2"),
                          ("x uniform 1,0", "low must be below high"),
                          ("x choice 1024", "needs a non-empty list"), ("x choice [1,", "needs a list literal"),
                          ("\nepochs choice [1,2]", "line 2: epochs cannot be tuned"),
                          ("synthetic_scale choice ['tiny']", "line 1: synthetic_scale is a data setting"),
                          ("text_recipe choice ['paper','tfidf']", "line 1: text_recipe is a data setting"),
                          ("min_user_interactions choice [0,5]", "min_user_interactions is a data setting"),
                          ("LABEL_FIELD choice ['label']", "LABEL_FIELD is a data setting"),
                          ("x choice [1]\nx choice [2]", "line 2: x is given twice"),
                          ("x qloguniform -3,-2.9,0.1", "line 1: no value of qloguniform"),
                          ("# only a comment", "no dimension")]:
        bad = tmp_path / "bad.hyper"
        bad.write_text(text)
        with pytest.raises(TuneError, match=message):
            read_hyper_file(bad)


@pytest.mark.unit
def test_metric_direction():
    from recbole_mma4ctr.experiment.tune import metric_mode

    assert metric_mode("auc") == "max" and metric_mode("gauc") == "max" and metric_mode("logloss") == "min"


@pytest.mark.unit
def test_the_best_trial_may_be_one_asha_stopped_but_never_a_failed_one():
    """Planted as the README's DeepFM tuning went: the best validation value belongs to a trial ASHA
    stopped after its best epoch; a failed trial ranks above everything and a trial without a value
    below; rows arrive ranked best first, as tune_in sorts them."""
    from recbole_mma4ctr.experiment.tune import best_trial

    ranked = [{"trial": "broken", "status": "failed", "best_auc": 0.99},
              {"trial": "stopped", "status": "stopped by ASHA", "best_auc": 0.7616},
              {"trial": "finished", "status": "completed", "best_auc": 0.7580},
              {"trial": "reused", "status": "finished earlier", "best_auc": 0.7500},
              {"trial": "died", "status": "no record"}]
    assert best_trial(ranked, "auc")["trial"] == "stopped"
    assert best_trial([r for r in ranked if r["trial"] != "stopped"], "auc")["trial"] == "finished"
    assert best_trial([r for r in ranked if r["trial"] in ("broken", "died")], "auc") is None


def test_gpu_request_without_a_gpu_is_refused_up_front(tmp_path, capsys, monkeypatch):
    from recbole_mma4ctr import cli
    from recbole_mma4ctr.experiment import engine

    monkeypatch.setattr(engine, "visible_gpus", lambda: 0)
    hyper = tmp_path / "h.hyper"
    hyper.write_text("learning_rate choice [0.001]\n")
    status = cli.main(["--tune", "--model=MMa4CTR", f"--params_file={hyper}", "--gpus_per_run=0.5"])
    assert status == 2
    error = capsys.readouterr().err
    assert "no usable CUDA GPU" in error and "PENDING forever" in error
    status = cli.main(["--tune", "--model=MMa4CTR", f"--params_file={hyper}", "--cpus_per_run=999"])
    assert status == 2 and "core(s)" in capsys.readouterr().err
    assert cli.main(["--tune", "--study=fusion"]) == 2
    assert cli.main(["--study=no_such_study"]) == 2 and "fusion" in capsys.readouterr().err


@pytest.mark.unit
def test_ray_temp_dir_is_short_enough_for_unix_sockets(tmp_path):
    from recbole_mma4ctr.experiment.engine import SOCKET_DEPTH, SOCKET_LIMIT, ray_temp_dir

    deep = tmp_path / ("d" * 60) / "tune-MMa4CTR-wechat"
    deep.mkdir(parents=True)
    chosen = ray_temp_dir(deep)
    try:
        assert len(chosen) + SOCKET_DEPTH <= SOCKET_LIMIT
        assert (deep / "rt").is_symlink() and (deep / "rt").resolve() == Path(chosen).resolve()
        assert ray_temp_dir(deep) == chosen          # the same folder on a rerun
    finally:
        shutil.rmtree(chosen, ignore_errors=True)


@pytest.mark.unit
def test_study_plans_and_cut_downs():
    from recbole_mma4ctr.experiment.studies import available_studies, load_study, point_settings, study_plan
    from recbole_mma4ctr.errors import TuneError

    assert set(available_studies()) >= {"epochs", "learning_rate", "batch_size", "lr_schedule", "fusion", "profile_length"}
    fusion = load_study("fusion")
    from recbole_mma4ctr.fusion import FUSIONS

    assert sorted(fusion["grid"]) == sorted(FUSIONS) and len(fusion["grid"]) == 11
    assert study_plan(fusion, None, None) == (fusion["grid"], [10, 30])
    assert study_plan(load_study("learning_rate"), "0.001,1e-4", "1,2") == ([0.001, 0.0001], [1, 2])
    assert study_plan(load_study("profile_length"), None, None)[0] == [0, 5, 11, 15, 21, 30]
    assert study_plan(load_study("epochs"), None, None) == (["epochs"], list(range(5, 101, 5)))
    assert study_plan(load_study("epochs"), "1,2", None) == (["epochs"], [1, 2])
    schedule = load_study("lr_schedule")
    assert point_settings(schedule, "without") == {"lr_halving_epochs": 0, "valid_interrupt": False}
    with pytest.raises(TuneError, match="points"):
        study_plan(schedule, "sometimes", None)


def test_cli_does_not_import_ray():
    code = ("import sys, recbole_mma4ctr.cli, recbole_mma4ctr.experiment.tune, recbole_mma4ctr.experiment.studies, recbole_mma4ctr.run; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


# ---- tuning runs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mma_tune(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tune")
    (workdir / "tiny.hyper").write_text("learning_rate loguniform -9.2,-4.6\ntrain_batch_size choice [1024,4096]\n")
    # every DeprecationWarning shown, in the driver and (the variable reaches Ray's workers) in every trial
    done = ok(run(workdir, "--tune", "--model=MMa4CTR", "--dataset=wechat", "--params_file=tiny.hyper", TINY,
                  "--epochs=2", "--num_samples=2", "--cpus_per_run=1", env={"PYTHONWARNINGS": "always::DeprecationWarning"}))
    folder = workdir / "results" / "tune-MMa4CTR-wechat"
    yield workdir, folder, done
    remove_ray_temp(folder)


def ray_deprecations(text: str) -> list[str]:
    """Lines of warnings that Ray raises about its own API (module ray or a Ray warning class)."""
    return [line for line in text.splitlines()
            if "DeprecationWarning" in line and ("/ray/" in line or "Ray" in line or "ray." in line)]


def test_no_deprecated_ray_api_is_used_by_the_driver_or_the_trials(mma_tune):
    workdir, folder, done = mma_tune
    logs = list((folder / "rt").resolve().glob("session_*/logs/worker-*"))
    assert logs, "no worker log found: the check would pass vacuously"
    found = ray_deprecations(done.stdout + done.stderr)
    for log in logs:
        found += [f"{log.name}: {line}" for line in ray_deprecations(log.read_text(errors="replace"))]
    assert not found, "\n".join(found[:20])


def test_tune_writes_trial_table_and_best_config(mma_tune):
    workdir, folder, done = mma_tune
    assert done.stdout.strip().splitlines()[-1] == str(folder / "best.yaml")
    summary = json.loads((folder / "trials.json").read_text())
    assert summary["metric"] == "auc" and summary["mode"] == "max" and len(summary["trials"]) == 2
    for trial in summary["trials"]:
        assert trial["status"] in ("completed", "stopped by ASHA", "early-stopped (validation)")
        assert 1 <= trial["epochs_run"] <= 2
        assert trial["best_auc"] == best_valid_auc(trial)
        assert 1e-4 < trial["learning_rate"] < 1.01e-2 and trial["train_batch_size"] in (1024, 4096)
    best = summary["best"]
    assert best["best_auc"] == max(t["best_auc"] for t in summary["trials"])
    with open(folder / "trials.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    table = (folder / "trials.md").read_text()
    assert "| trial | learning_rate | train_batch_size | best valid auc |" in table
    settings = yaml.safe_load((folder / "best.yaml").read_text())
    assert settings["learning_rate"] == best["learning_rate"] and settings["train_batch_size"] == best["train_batch_size"]
    assert settings["epochs"] == 2 and settings["synthetic_scale"] == "tiny"
    assert "best: valid auc=" in done.stdout
    # Ray's files stay under the results folder (rt/ links to a short /tmp folder here), not in HOME
    assert list((folder / "ray").glob("tune-*/cell_trainable_*/params.json"))
    assert list((folder / "rt").glob("session_*"))
    assert not (workdir / "ray_results").exists()


@pytest.mark.ray  # the numpy-2 CI environment has no Ray
def test_best_config_is_accepted_by_a_normal_run_which_does_not_import_ray(mma_tune):
    workdir, folder, _ = mma_tune
    code = ("import sys; from recbole_mma4ctr.cli import main; "
            f"status = main(['--model=MMa4CTR', '--dataset=wechat', '--config_files={folder / 'best.yaml'}', "
            "'--show_progress=False']); "
            "print('RAY-IMPORTED' if 'ray' in sys.modules else 'NO-RAY'); sys.exit(status)")
    done = ok(subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300))
    assert done.stdout.strip().splitlines()[-1] == "NO-RAY"
    record = json.loads((workdir / done.stdout.strip().splitlines()[-2]).read_text())
    best = json.loads((folder / "trials.json").read_text())["best"]
    assert record["config"]["learning_rate"] == pytest.approx(best["learning_rate"])
    assert record["config"]["train_batch_size"] == best["train_batch_size"]
    assert record["best_valid"]["auc"] == pytest.approx(best["best_auc"], abs=0.01)


@pytest.mark.ray  # the numpy-2 CI environment has no Ray
def test_failing_trial_is_recorded_and_the_other_completes(tmp_path):
    """FM (a cheap baseline) with a grid of two learning rates, one of which Adam refuses."""
    (tmp_path / "fail.hyper").write_text("learning_rate grid [0.01,-1.0]\n")
    done = ok(run(tmp_path, "--tune", "--model=FM", "--dataset=wechat", "--params_file=fail.hyper", TINY, "--epochs=1",
                  "--num_samples=1"))
    folder = tmp_path / "results" / "tune-FM-wechat"
    try:
        trials = {t["learning_rate"]: t for t in json.loads((folder / "trials.json").read_text())["trials"]}
        assert trials[-1.0]["status"] == "failed" and "Invalid learning rate" in trials[-1.0]["error"]
        assert trials[-1.0]["best_auc"] is None
        assert trials[0.01]["status"] == "completed" and trials[0.01]["best_auc"] == best_valid_auc(trials[0.01])
        assert yaml.safe_load((folder / "best.yaml").read_text())["learning_rate"] == 0.01
        assert "| failed | " in (folder / "trials.md").read_text()
    finally:
        remove_ray_temp(folder)


def test_a_mm_tune_keeps_its_name_counts_duplicates_and_best_yaml_reproduces_the_best_trial(tmp_path):
    """DeepFM+mm with two learning rates and three samples: two trials run, one duplicate counted;
    every name says DeepFM+mm; the command best.yaml prints gives the best trial's metrics exactly;
    the same tune again reuses both trials without starting Ray."""
    import shlex

    from recbole_mma4ctr.record import records_in

    (tmp_path / "lr.hyper").write_text("learning_rate choice [0.001,0.01]\n")
    command = ("--tune", "--model=DeepFM+mm", "--dataset=wechat", "--params_file=lr.hyper", TINY, "--epochs=1",
               "--num_samples=3")
    done = ok(run(tmp_path, *command))
    folder = tmp_path / "results" / "tune-DeepFM+mm-wechat"
    try:
        assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["tune-DeepFM+mm-wechat"]
        summary = json.loads((folder / "trials.json").read_text())
        assert summary["model"] == "DeepFM+mm"
        assert summary["counts"] == {"asked": 3, "run": 2, "reused": 0, "duplicates": 1,
                                     "space": "the space holds 2 distinct setting(s)"}
        assert sorted(t["learning_rate"] for t in summary["trials"]) == [0.001, 0.01]
        table = (folder / "trials.md").read_text()
        assert "# Tuning trials of DeepFM+mm on wechat" in table
        assert "3 sample(s) asked: 2 run now, 0 finished earlier with the same settings (reused), 1 duplicate(s)" in table
        assert table.count("| trial1-learning_rate=0.001 |") == 1 and table.count("| trial2-learning_rate=0.01 |") == 1
        assert "1 duplicate sample(s) not run" in done.stdout
        trials = records_in(folder)
        assert len(trials) == 2 and {r["model"] for r in trials} == {"DeepFM+mm"}
        assert all(r["config"]["feature_fair"] is True and r["config"]["model"] == "DeepFM" for r in trials)
        # best.yaml's own command, from the folder the tune ran in
        use = next(line for line in (folder / "best.yaml").read_text().splitlines() if line.startswith("# Use: "))
        arguments = shlex.split(use[len("# Use: "):])
        assert arguments[:3] == ["python", "run_recbole_mma4ctr.py", "--model=DeepFM+mm"]
        again = ok(subprocess.run([sys.executable, str(REPO / arguments[1]), *arguments[2:]], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=400, env={**os.environ, "HOME": str(tmp_path)}))
        reproduced = json.loads((tmp_path / again.stdout.strip().splitlines()[-1]).read_text())
        best = json.loads(Path(summary["best"]["record"]).read_text())
        assert reproduced["model"] == "DeepFM+mm" and reproduced["run_id"] != best["run_id"]
        assert reproduced["test"] == best["test"] and reproduced["best_valid"] == best["best_valid"]
        assert reproduced["key"] == best["key"]          # the same settings, data and code
        # the same tune again: both trials finished earlier, reused; no Ray
        rerun = ok(run(tmp_path, *command))
        assert "3 sample(s) asked: 0 run now, 2 finished earlier" in rerun.stdout and "local Ray" not in rerun.stdout
        assert json.loads((folder / "trials.json").read_text())["best"]["record"] == summary["best"]["record"]
    finally:
        remove_ray_temp(folder)


# ---- studies ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("study")


def study_rows(folder):
    return {row["label"]: row for row in json.loads((folder / "study.json").read_text())["rows"]}


@pytest.mark.ray  # the numpy-2 CI environment has no Ray
def test_fusion_study_cut_down(study_dir):
    done = ok(run(study_dir, "--study=fusion", "--dataset=wechat", TINY, "--grid=vt_cross,textual", "--marks=1"))
    folder = study_dir / "results" / "study-fusion-MMa4CTR-wechat"
    try:
        assert done.stdout.strip().splitlines()[-1] == str(folder / "study.md")
        rows = study_rows(folder)
        assert list(rows) == ["vt_cross", "textual"]
        for row in rows.values():
            assert row["status"] == "ok" and row["epochs_run"] == 1 and row["auc@1"] == recorded_test_auc(row, 1)
        assert rows["vt_cross"]["input_width"] != rows["textual"]["input_width"]
        table = (folder / "study.md").read_text()
        assert "| fusion | AUC@1 | paper AUC@10 (wechat, real data) |" in table and "| textual | " in table
        assert (folder / "study.png").stat().st_size > 10_000 and (folder / "study.csv").exists()
        for label, row in rows.items():
            assert json.loads(Path(row["record"]).read_text())["config"]["fusion"] == label
        # a rerun with the same settings starts no Ray at all
        again = ok(run(study_dir, "--study=fusion", "--dataset=wechat", TINY, "--grid=vt_cross,textual", "--marks=1"))
        assert "2 done earlier, 0 to run" in again.stdout and "local Ray" not in again.stdout
    finally:
        remove_ray_temp(folder)


@pytest.mark.ray  # the numpy-2 CI environment has no Ray
def test_profile_length_study_with_zero_length(study_dir):
    ok(run(study_dir, "--study=profile_length", "--dataset=wechat", TINY, "--grid=0,5", "--marks=1"))
    folder = study_dir / "results" / "study-profile_length-MMa4CTR-wechat"
    try:
        rows = study_rows(folder)
        assert list(rows) == ["0", "5"]
        assert all(row["status"] == "ok" and row["auc@1"] == recorded_test_auc(row, 1) for row in rows.values())
        # three profiles (one per fused modality) of L pooled values + the device
        assert rows["5"]["input_width"] - rows["0"]["input_width"] == 3 * 5
        assert "| 0 | " in (folder / "study.md").read_text()
    finally:
        remove_ray_temp(folder)


def test_a_study_over_a_data_setting_prepares_the_data_of_each_point(tmp_path):
    """text_recipe decides the atomic files: each point gets a folder converted with its value,
    and its record names that data (its settings and fingerprint)."""
    (tmp_path / "recipe.yaml").write_text("title: Text recipe\nparameter: text_recipe\ngrid: [paper, tfidf]\n"
                                          "marks: [1]\nmodel: MMa4CTR\n")
    ok(run(tmp_path, "--study=recipe.yaml", "--dataset=wechat", TINY))
    folder = tmp_path / "results" / "study-recipe-MMa4CTR-wechat"
    try:
        rows = study_rows(folder)
        assert list(rows) == ["paper", "tfidf"] and all(row["status"] == "ok" for row in rows.values())
        fingerprints = set()
        for label, row in rows.items():
            record = json.loads(Path(row["record"]).read_text())
            data = tmp_path / "dataset_atomic" / f"text_recipe-{label}" / "wechat"
            manifest = json.loads((data / "manifest.json").read_text())
            assert manifest["settings"]["text_recipe"] == label
            assert record["config"]["text_recipe"] == label and record["data"]["settings"]["text_recipe"] == label
            assert record["data"]["fingerprint"] == manifest["fingerprint"]
            assert Path(record["config"]["data_path"]).resolve() == data.resolve()
            fingerprints.add(manifest["fingerprint"])
        assert len(fingerprints) == 2
    finally:
        remove_ray_temp(folder)
