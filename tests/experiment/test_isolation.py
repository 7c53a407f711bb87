"""Runs never read each other's files, and no setting is ever executed (issue: nothing lost, nothing faked)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.config import Config

from conftest import REPO, copy_atomic, run_settings
from recbole_mma4ctr.record import records_in
from recbole_mma4ctr.run import run_recbole_mma4ctr


def test_two_runs_started_together_in_one_folder_keep_their_own_files(tmp_path):
    """Two runs in the same second, same folder: each record's test metrics are its own weights'."""
    command = [sys.executable, str(REPO / "run_recbole_mma4ctr.py"), "--model=MMa4CTR", "--dataset=wechat",
               "--synthetic_scale=tiny", "--epochs=2", "--show_progress=False"]
    # one generation first, so the two runs race only on their own files
    prepare = subprocess.run([c for c in command if c != "--epochs=2"] + ["--epochs=1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert prepare.returncode == 0, prepare.stderr[-2000:]
    children = [subprocess.Popen([*command, f"--learning_rate={lr}"], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for lr in (0.01, 0.0001)]
    outputs = [child.communicate(timeout=600) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err[-2000:]
    paths = [tmp_path / out.strip().splitlines()[-1] for out, _ in outputs]
    records = [json.loads(path.read_text()) for path in paths]
    assert records[0]["run_id"] != records[1]["run_id"]
    for record, path in zip(records, paths):
        run_id = record["run_id"]
        for name in (path.name, record["predictions"], Path(record["checkpoint"]).name, Path(record["log"]).name):
            assert run_id in name
        assert record["where"]["host"] and record["started_at"] <= record["finished_at"]
    assert records[0]["test"]["auc"] != records[1]["test"]["auc"]
    # re-score each record's own checkpoint on the test split: the metrics are that record's
    from recbole.data import data_preparation

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.utils import create_dataset, get_model, get_trainer

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for record in records:
            config = build_config("MMa4CTR", "wechat", None, {"synthetic_scale": "tiny", "show_progress": False,
                                                               "learning_rate": record["config"]["learning_rate"]})
            dataset = create_dataset(config)
            _, _, test_data = data_preparation(config, dataset)
            model = get_model("MMa4CTR")(config, test_data._dataset)
            trainer = get_trainer(config["MODEL_TYPE"], "MMa4CTR")(config, model)
            result = trainer.evaluate(test_data, load_best_model=True, model_file=record["checkpoint"])
            assert result["auc"] == pytest.approx(record["test"]["auc"], abs=1e-4)
            assert result["gauc"] == pytest.approx(record["test"]["gauc"], abs=1e-4)
    finally:
        os.chdir(cwd)


PAYLOAD = "__import__('os').system('touch {flag}') or 0.001"


def test_no_setting_is_ever_executed_whichever_way_it_comes_in(tmp_path):
    """The payload through --key=value, a config file, a hyper file and a study file: nothing runs."""
    import yaml

    from recbole_mma4ctr.cells import make_cell
    from recbole_mma4ctr.config import build_config, parse_overrides
    from recbole_mma4ctr.experiment.studies import load_study, point_settings
    from recbole_mma4ctr.experiment.tune import read_hyper_file

    flag = tmp_path / "PWNED"
    payload = PAYLOAD.format(flag=flag)
    ways = {}
    ways["command line"] = parse_overrides([f"--learning_rate={payload}"])
    config_file = tmp_path / "evil.yaml"
    config_file.write_text(yaml.safe_dump({"learning_rate": payload}))
    hyper = tmp_path / "evil.hyper"
    hyper.write_text(f"learning_rate choice [\"{payload}\"]\n")
    ways["hyper file"] = {"learning_rate": read_hyper_file(hyper)[0].values[0]}
    study_file = tmp_path / "evil.yaml.d" / "evil_study.yaml"
    study_file.parent.mkdir()
    study_file.write_text(yaml.safe_dump({"parameter": "learning_rate", "grid": [payload], "settings": {"epochs": 1}}))
    study = load_study(str(study_file))
    ways["study file"] = {**study["settings"], **point_settings(study, study["grid"][0])}
    for way, settings in ways.items():
        cell = make_cell("MMa4CTR", "wechat", None, settings)
        config = build_config("MMa4CTR", "wechat", None, cell["settings"])
        assert config["learning_rate"] == payload, way          # kept as the text it was
        assert not flag.exists(), f"{way}: the payload ran"
    cell = make_cell("MMa4CTR", "wechat", [str(config_file)], {})
    from recbole_mma4ctr.cells import config_files

    config = build_config("MMa4CTR", "wechat", config_files(cell, tmp_path), {})
    assert config["learning_rate"] == payload and not flag.exists()
    # a YAML tag that would build a Python object is refused, not followed
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("learning_rate: !!python/name:os.system\n")
    with pytest.raises(Exception, match="tagged.yaml"):
        make_cell("MMa4CTR", "wechat", [str(tagged)], {})


def test_a_payload_setting_goes_through_a_whole_run_as_text(tiny_atomic, tmp_path, monkeypatch):
    """RecBole's own Config evaluates a setting's text (the control below runs the payload); a run
    of this project carries it to the end as text, in a key nobody reads and in the learning rate."""
    from recbole_mma4ctr.compat import recbole_stack_settings

    control = tmp_path / "CONTROL"
    # RecBole 1.2.1's Config dies on numpy 2 before reading anything (np.float_): only that alias
    # table is replaced for the control; the evaluation of the setting stays RecBole's own
    monkeypatch.setattr(Config, "compatibility_settings", lambda self: recbole_stack_settings())
    Config(model="BPR", dataset="any", config_dict={"note": PAYLOAD.format(flag=control)})
    monkeypatch.undo()
    assert control.exists(), "the payload is not live: this test would prove nothing"
    copy_atomic(tiny_atomic[0], tmp_path / "data", "tw")
    flag = tmp_path / "PWNED"
    payload = PAYLOAD.format(flag=flag)
    common = {"data_path": tmp_path / "data", "epochs": 1, "profile_length": 5}
    record = run_recbole_mma4ctr("MMa4CTR", "tw", None, run_settings(tmp_path / "note", note=payload, **common))
    assert record["status"] == "ok" and record["config"]["note"] == payload and not flag.exists()
    # evaluated, the text would be 0.001; kept as text, it reaches torch's optimizer, which refuses it
    with pytest.raises(TypeError, match="'<=' not supported between instances of 'float' and 'str'"):
        run_recbole_mma4ctr("MMa4CTR", "tw", None, run_settings(tmp_path / "lr", learning_rate=payload, **common))
    failed = records_in(tmp_path / "lr" / "results")
    assert [r["status"] for r in failed] == ["failed"] and not flag.exists()


@pytest.mark.unit
def test_values_are_typed_as_recbole_types_them_without_eval():
    from recbole_mma4ctr.config import typed_value

    assert typed_value("[128,32,4]") == [128, 32, 4]
    assert typed_value("0.001") == 0.001 and typed_value("1e-3") == 0.001
    assert typed_value("True") is True and typed_value("false") is False
    assert typed_value("None") is None and typed_value("~") is None
    assert typed_value("vat_concat") == "vat_concat"
    assert typed_value("{'split': {'RS': [0.8, 0.1, 0.1]}}") == {"split": {"RS": [0.8, 0.1, 0.1]}}
    assert typed_value("__import__('os').getcwd()") == "__import__('os').getcwd()"


@pytest.mark.unit
def test_records_refuse_path_like_names_and_readers_skip_them(tmp_path):
    from recbole_mma4ctr.record import failure_record, records_in, write_record
    from recbole_mma4ctr.errors import RecordError

    base = {"model": "MMa4CTR", "dataset": "wechat", "kind": "run", "key": "k"}
    write_record(failure_record(base, "boom"), tmp_path)
    evil = failure_record({**base, "dataset": "../../outside"}, "boom")
    with pytest.raises(RecordError, match="not a plain name"):
        write_record(evil, tmp_path)
    (tmp_path / "forged.json").write_text(json.dumps({**evil, "schema": 2}))
    assert [r["dataset"] for r in records_in(tmp_path)] == ["wechat"]
    assert not list(tmp_path.parent.glob("outside*"))


@pytest.mark.unit
def test_predictions_round_trip_without_pickle(tmp_path):
    from recbole_mma4ctr.record import read_predictions, write_record

    record = {"schema": 2, "status": "failed", "run_id": "r1", "model": "M", "dataset": "d", "kind": "run", "key": "k",
              "started_at": "t", "finished_at": "t", "where": {}, "error": "x"}
    predictions = {"user": np.array(["u1", "u2"], dtype=object), "item": np.array(["7", "8"], dtype=object),
                   "timestamp": np.array([1.0, 2.0]), "label": np.array([0.0, 1.0]), "score": np.array([0.2, 0.9])}
    path = write_record(record, tmp_path, predictions)
    loaded = read_predictions({**json.loads(path.read_text()), "record_path": str(path)})
    assert list(loaded["user"]) == ["u1", "u2"] and loaded["score"].tolist() == [0.2, 0.9]
    assert torch.is_tensor(torch.as_tensor(loaded["score"]))


def test_a_run_leaves_other_log_handlers_and_their_files_alone(tmp_path, monkeypatch):
    """pytest (and any host program) has file handlers of its own, e.g. to /dev/null: a run must
    neither detach them nor touch their files; a second run in the process replaces only the
    first run's handler."""
    import logging

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.run import _init_log

    monkeypatch.chdir(tmp_path)
    foreign_path = tmp_path / "elsewhere" / "host.log"
    foreign_path.parent.mkdir()
    foreign = logging.FileHandler(foreign_path)          # empty, like /dev/null
    root = logging.getLogger()
    root.addHandler(foreign)
    try:
        config = build_config("MMa4CTR", "wechat", None, {})
        first = _init_log(config, "run-a")
        second = _init_log(config, "run-b")
        assert foreign in root.handlers and foreign_path.exists()
        files = [Path(h.baseFilename).name for h in root.handlers if isinstance(h, logging.FileHandler)]
        assert "run-b" in second and Path(second).name in files and Path(first).name not in files
        assert sorted(p.name for p in (tmp_path / "log" / "MMa4CTR").iterdir()) == sorted(
            [Path(first).name, Path(second).name])
    finally:
        root.removeHandler(foreign)
        foreign.close()
        for handler in list(root.handlers):
            if isinstance(handler, logging.FileHandler) and str(tmp_path) in handler.baseFilename:
                root.removeHandler(handler)
                handler.close()
