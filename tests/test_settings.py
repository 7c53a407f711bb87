"""The command line's settings: unknown keys, bad values, the CLI contract, --help (no training, no Ray).

Every command here stops before any work or runs a stand-in for the mode, so the tests take seconds.
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from recbole_mma4ctr import cli
from recbole_mma4ctr.experiment import studies, tune
from recbole_mma4ctr.known_settings import Registry, recbole_properties
from recbole_mma4ctr.run import Outcome
from recbole_mma4ctr.usage import general_help, mode_help, shown

REPO = Path(__file__).resolve().parents[1]
PROPERTIES = REPO / "properties"


def line(path: str, key: str) -> str:
    """``path, line N`` of ``key:`` in a shipped settings file (found by reading the file, so the tests
    follow edits of properties/)."""
    root = recbole_properties().parents[1] if path.startswith("recbole/") else REPO
    for number, text in enumerate((root / path).read_text().splitlines(), 1):
        if re.match(rf"\s*{key}:", text):
            return f"{path}, line {number}"
    raise AssertionError(f"{key} not in {path}")


OVERALL_EPOCHS = line("properties/overall.yaml", "epochs")
MMA_LR = line("properties/model/MMa4CTR.yaml", "learning_rate")


def must_not_run(*args, **kwargs):
    pytest.fail("the command started work although a setting was bad")


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Run commands in an empty folder with every mode replaced by a failure: a check must stop first."""
    monkeypatch.chdir(tmp_path)
    for name in ("run_recbole_mma4ctr", "run_comparison", "stop_on_sigterm"):
        monkeypatch.setattr(cli, name, must_not_run if name != "stop_on_sigterm" else lambda: None)
    monkeypatch.setattr(tune, "command", must_not_run)
    monkeypatch.setattr(studies, "command", must_not_run)
    return tmp_path


def error_of(capsys, argv) -> tuple[int, str]:
    status = cli.main(argv)
    return status, capsys.readouterr().err


# ---- unknown settings, through each of the four ways in --------------------------------------------
def test_a_misspelled_setting_on_the_command_line_stops_the_run(no_work, capsys):
    status, err = error_of(capsys, ["--model=MMa4CTR", "--dataset=wechat", "--epochs=1", "--learnig_rate=0.5"])
    assert (status, err) == (2, "error: unknown setting 'learnig_rate' (did you mean learning_rate?)\n")
    status, err = error_of(capsys, ["--compare", "--models=MMa4CTR,DIN", "--trial_budget=2"])
    assert status == 2 and err.startswith("error: unknown setting 'trial_budget': no settings file defines it")
    assert list(no_work.iterdir()) == []


def test_a_misspelled_setting_in_a_config_file_is_named_by_file_and_line(no_work, capsys):
    config = no_work / "mine.yaml"
    config.write_text("# my settings\nepochs: 2\n\ntrain_batch_sise: 512\n")
    status, err = error_of(capsys, ["--model=DIN", f"--config_files={config}"])
    assert (status, err) == (2, f"error: {config}, line 4: unknown setting 'train_batch_sise' "
                                f"(did you mean train_batch_size?)\n")
    config.write_text("epochs: 2\ntrue: 1\n")          # a key YAML reads as a flag is still named by its line
    assert error_of(capsys, ["--model=DIN", f"--config_files={config}"]) == (2, f"error: {config}, line 2: unknown "
                                                                             f"setting 'True': no settings file defines "
                                                                             f"it (--allow_unknown_settings=True passes "
                                                                             f"a key of your own RecBole extension)\n")
    config.write_text("models: MMa4CTR,DIN\n")
    status, err = error_of(capsys, ["--compare", f"--config_files={config}"])
    assert status == 2 and err == (f"error: {config}, line 1: models is a command-line option (--models=...), "
                                   f"not a setting a file holds\n")


def test_a_misspelled_dimension_in_a_hyper_file_is_named_by_file_and_line(no_work, capsys):
    hyper = no_work / "space.hyper"
    hyper.write_text("# a space\ntrain_batch_size choice [1024,2048]\nlearnig_rate loguniform -9.2,-4.6\n")
    status, err = error_of(capsys, ["--tune", "--model=MMa4CTR", f"--params_file={hyper}"])
    assert (status, err) == (2, f"error: {hyper}, line 3: unknown setting 'learnig_rate' (did you mean learning_rate?)\n")


def test_a_misspelled_setting_in_a_study_file_is_named_by_file_and_line(no_work, capsys):
    study = no_work / "mine.yaml"
    study.write_text("title: Mine\nparameter: learning_rate\ngrid: [0.001]\nmarks: [1]\nsettings:\n"
                     "  train_batch_size: 1024\n  stoping_step: 3\n")
    status, err = error_of(capsys, [f"--study={study}"])
    assert (status, err) == (2, f"error: {study}, line 7: unknown setting 'stoping_step' (did you mean stopping_step?)\n")
    study.write_text("title: Mine\nparameter: learnig_rate\ngrid: [0.001]\n")
    assert error_of(capsys, [f"--study={study}"])[1] == (f"error: {study}, line 2: unknown setting 'learnig_rate' "
                                                          f"(did you mean learning_rate?)\n")
    study.write_text("title: Mine\nparameter: learning_rate\ngrid: [0.001]\nseetings: {epochs: 2}\n")
    assert error_of(capsys, [f"--study={study}"])[1] == (f"error: {study}, line 4: unknown study key 'seetings' "
                                                          f"(did you mean settings?)\n")


def test_a_recbole_key_the_project_does_not_mention_is_accepted_and_reaches_the_run(monkeypatch, capsys):
    seen = {}

    def fake_run(model, dataset, config_files, overrides, marks=None, protocol=None):
        seen.update(model=model, dataset=dataset, overrides=dict(overrides), marks=marks)
        return {"record_path": "results/fake.json"}

    monkeypatch.setattr(cli, "run_recbole_mma4ctr", fake_run)
    assert cli.main(["--model=DeepFM", "--weight_decay=0.01", "--dropout_prob=0.1", "--marks=1,3"]) == 0
    assert capsys.readouterr().out == "results/fake.json\n"
    assert seen == {"model": "DeepFM", "dataset": "wechat", "overrides": {"weight_decay": "0.01", "dropout_prob": "0.1"},
                    "marks": [1, 3]}
    # a key of a model's own file is known for that model only (RecBole's, and this project's)
    assert cli.main(["--model=BPR", "--dropout_prob=0.1"]) == 2
    assert cli.main(["--model=DIN", "--fusion=visual"]) == 2
    assert "unknown setting 'fusion'" in capsys.readouterr().err
    assert cli.main(["--model=DIN+mm", "--fusion=visual"]) == 0
    capsys.readouterr()
    # a protocol's keys are known under that protocol (the challenge's day split among them)
    assert cli.main(["--split_days=[11,12,13]"]) == 2
    assert "unknown setting 'split_days'" in capsys.readouterr().err
    assert Registry("compare", ["DIN"], "wechat", "challenge").check_settings({"split_days": "[11,12,13]",
                                                                               "challenge_round": "2"}) is None


def test_the_escape_lets_named_keys_of_ones_own_extension_through(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(cli, "run_recbole_mma4ctr",
                        lambda *args, **kwargs: seen.update(overrides=dict(args[3])) or {"record_path": "r.json"})
    assert cli.main(["--my_extension_key=3", "--allow_unknown_settings=my_extension_key,other"]) == 0
    assert seen["overrides"] == {"my_extension_key": "3"}
    assert cli.main(["--anything_at_all=3", "--allow_unknown_settings=true"]) == 0
    capsys.readouterr()
    assert cli.main(["--not_listed=3", "--allow_unknown_settings=my_extension_key"]) == 2
    assert "unknown setting 'not_listed'" in capsys.readouterr().err


def test_an_option_of_another_mode_is_named_with_its_mode(no_work, capsys):
    assert error_of(capsys, ["--seeds=1,2"]) == (2, "error: --seeds is an option of --compare, not of a single run\n")
    status, err = error_of(capsys, ["--tune", "--marks=1"])
    assert status == 2 and err.startswith("error: --marks is an option of a single run and --compare and --study")


def test_every_shipped_hyper_and_study_file_names_only_known_settings():
    for path in sorted((PROPERTIES / "hyper").glob("*.hyper")):
        model = "MMa4CTR" if path.stem == "default" else path.stem
        Registry("tune", [model], "wechat").check_hyper(path, tune.read_hyper_file(path))
    for name in studies.available_studies():
        study = studies.load_study(name)
        Registry("study", [study.get("model") or "MMa4CTR"], "wechat").check_study(study, studies.STUDY_KEYS)


# ---- values that cannot work (issue 19, defect 11) ---------------------------------------------------
@pytest.mark.parametrize("argument, message", [
    ("--learning_rate=abc", "--learning_rate=abc: expected a number > 0 (the default is 0.001, "
                            f"{MMA_LR})"),
    ("--epochs=ten", f"--epochs=ten: expected a whole number >= 1 (the default is 10, {OVERALL_EPOCHS})"),
    ("--epochs=-1", f"--epochs=-1: expected a whole number >= 1 (the default is 10, {OVERALL_EPOCHS})"),
    ("--epochs=2.5", "--epochs=2.5: expected a whole number >= 1"),
    ("--valid_interrupt=sometimes", "--valid_interrupt=sometimes: expected true or false (the default is True, "
                                    "properties/model/MMa4CTR.yaml"),
    ("--lr_decay=half", "--lr_decay=half: expected a number (the default is 0.5, properties/model/MMa4CTR.yaml"),
])
def test_a_bad_value_names_its_key_and_what_it_takes_and_exits_2(no_work, capsys, argument, message):
    status, err = error_of(capsys, [argument])
    assert status == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_bad_value_in_a_config_file_names_file_and_line(no_work, capsys):
    config = no_work / "mine.yaml"
    config.write_text("epochs: 0\n")
    assert error_of(capsys, [f"--config_files={config}"]) == (
        2, f"error: {config}, line 1: epochs: 0: expected a whole number >= 1 (the default is 10, {OVERALL_EPOCHS})\n")


# ---- one CLI contract ---------------------------------------------------------------------------------
def test_report_with_a_mode_or_a_setting_is_refused(no_work, capsys):
    assert error_of(capsys, ["--report=results/x", "--compare"]) == (
        2, "error: --report writes the report of a finished results folder and runs nothing: it does not combine "
           "with --compare\n")
    status, err = error_of(capsys, ["--report=results/x", "--study=fusion"])
    assert status == 2 and "does not combine with --study" in err
    assert error_of(capsys, ["--report=results/x", "--epochs=3"]) == (
        2, "error: --report takes no other setting (it only reads the records); got --epochs\n")


def test_each_mode_returns_its_outcome_and_the_cli_alone_prints_it(monkeypatch, capsys):
    monkeypatch.setattr(cli, "stop_on_sigterm", lambda: None)
    monkeypatch.setattr(cli, "run_comparison", lambda *args: (Path("out"), ["DIN", "BPR-seed7"]))
    assert cli.main(["--compare", "--models=MMa4CTR,DIN"]) == 1
    out, err = capsys.readouterr()
    assert out == f"{Path('out') / 'comparison.md'}\n"
    assert err == "error: 2 cell(s) failed: DIN, BPR-seed7 (their records say why)\n"

    def no_trial(*args):
        raise RuntimeError("no trial finished with a validation auc; see trials.md")

    monkeypatch.setattr(tune, "run_tuning", no_trial)
    assert tune.command("MMa4CTR", "wechat", None, {}, {"num_samples": "2"}) == \
        Outcome((), ("no trial finished with a validation auc; see trials.md",))
    monkeypatch.setattr(tune, "command", lambda *args: Outcome((), ("no trial finished",)))
    assert cli.main(["--tune", "--model=MMa4CTR"]) == 1
    assert capsys.readouterr() == ("", "error: no trial finished\n")
    monkeypatch.setattr(studies, "command", lambda *args: Outcome((Path("s/study.md"),), ()))
    assert cli.main(["--study=fusion", "--grid=vat_concat"]) == 0
    assert capsys.readouterr().out == f"{Path('s/study.md')}\n"


@pytest.mark.parametrize("argv, mode, says", [
    (["--model=MMa4CTR"], "run_recbole_mma4ctr", "a single run does not resume"),
    (["--compare"], "run_comparison", "rerun the same command to resume (finished cells are kept and skipped)"),
])
def test_ctrl_c_says_what_is_true_for_the_mode(monkeypatch, capsys, argv, mode, says):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "stop_on_sigterm", lambda: None)
    monkeypatch.setattr(cli, mode, interrupted)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted; ") and says in err
    assert ("rerun the same command" in err) == (mode == "run_comparison")


# ---- --help -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage_and_exits_0(capsys, flag):
    assert cli.main([flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: run_recbole_mma4ctr.py [--compare | --tune | --study=NAME | --report=FOLDER]")
    for part in ("--compare", "--tune", "--study=NAME", "--report=FOLDER", "examples:", "docs/settings.md",
                 "--epochs=10", "--learning_rate=0.001"):
        assert part in out


def test_the_script_the_console_script_and_python_m_all_print_the_help(monkeypatch, capsys):
    from recbole_mma4ctr import __main__ as entry

    monkeypatch.setattr(sys, "argv", ["recbole-mma4ctr", "--help"])
    assert entry.run() == 0                                         # the console script's entry point
    console = capsys.readouterr().out
    for run in (lambda: runpy.run_path(str(REPO / "run_recbole_mma4ctr.py"), run_name="__main__"),
                lambda: runpy.run_module("recbole_mma4ctr", run_name="__main__")):
        monkeypatch.setattr(sys, "argv", ["x", "-h"])
        monkeypatch.delitem(sys.modules, "recbole_mma4ctr.__main__", raising=False)
        with pytest.raises(SystemExit) as stop:
            run()
        assert stop.value.code == 0 and capsys.readouterr().out == console


def test_each_mode_has_its_own_help(capsys):
    assert cli.main(["--compare", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--models=all", "--marks=[10, 20, 30, 50]", "--seeds=~", "--train_to=epochs", "--cpus_per_run=1",
                   "--gpus_per_run=0", "--ray_address=~", "--max_failures=2", "--protocol=honest"):
        assert f"  {option} " in out, option
    assert cli.main(["--tune", "-h"]) == 0
    out = capsys.readouterr().out
    for option in ("--num_samples=8", "--metric=~", "--params_file=~", "--model=MMa4CTR"):
        assert f"  {option} " in out, option
    assert cli.main(["--study", "--help"]) == 0
    out = capsys.readouterr().out
    for name in studies.available_studies():
        assert re.search(rf"^  {name} +", out, re.M), name


def help_defaults(text: str) -> dict[str, tuple[str, str]]:
    """--key=value lines of a help text: key -> (value shown, file named)."""
    return {match[1]: (match[2], match[3]) for match in
            re.finditer(r"^  --(\w+)=(.+?) {2,}.*?\(((?:recbole/)?properties/[\w/]+\.yaml)\)$", text, re.M)}


def expected_default(key: str, where: str, section: str):
    """The default read straight from the files (independently of the registry); the file named
    must be the last layer that sets it."""
    commands = yaml.safe_load((PROPERTIES / "commands.yaml").read_text())
    if where == "properties/commands.yaml":
        sections = ["common", section] + (["engine"] if section != "run" else [])
        return {k: v for name in sections for k, v in commands[name].items()}[key]
    layers = {"recbole/properties/overall.yaml": recbole_properties() / "overall.yaml",
              "properties/overall.yaml": PROPERTIES / "overall.yaml",
              "properties/dataset/wechat.yaml": PROPERTIES / "dataset" / "wechat.yaml",
              f"properties/model/{commands['run']['model']}.yaml": PROPERTIES / "model" / f"{commands['run']['model']}.yaml"}
    merged = {}
    for label, path in layers.items():
        merged.update({k: (v, label) for k, v in (yaml.safe_load(path.read_text()) or {}).items()})
    value, label = merged[key]
    assert where == label, (key, where, label)
    return value


@pytest.mark.parametrize("section", ["run", "compare", "tune", "study"])
def test_every_default_the_help_shows_is_the_one_properties_gives(section):
    text = general_help() if section == "run" else mode_help(section)
    shown_defaults = help_defaults(text)
    assert len(shown_defaults) >= 5
    for key, (value, where) in shown_defaults.items():
        assert value == shown(expected_default(key, where, section)), key


def test_help_for_one_setting_gives_its_default_files_and_comments(capsys):
    assert cli.main(["--help=learning_rate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"learning_rate: 0.001 for --model=MMa4CTR on --dataset=wechat ({MMA_LR})"
    assert f"  {line('recbole/properties/overall.yaml', 'learning_rate')}: 0.001  # (float) Learning rate." in lines
    assert f"  {line('properties/overall.yaml', 'learning_rate')}: 0.001" in lines
    assert cli.main(["--help=weight_decay"]) == 0
    assert "# (float) The weight decay value (L2 penalty) for optimizers." in capsys.readouterr().out
    assert cli.main(["--help=max_failures"]) == 0
    assert f"{line('properties/commands.yaml', 'max_failures')}: 2  # retries of a cell whose worker died" in \
        capsys.readouterr().out
    assert cli.main(["--help=text_max_dim"]) == 0   # a comment continued on the next line is kept whole
    assert "90% of a TF-IDF matrix's energy needs most of its rank" in capsys.readouterr().out
    assert error_of(capsys, ["--help=learnig_rate"]) == (2, "error: unknown setting 'learnig_rate' (did you mean "
                                                            "learning_rate?)\n")
