"""The command line of ``run_recbole_mma4ctr.py``, ``recbole-mma4ctr`` and ``python -m recbole_mma4ctr``.

    [--key=value ...]                   one run of --model on --dataset (RecBole settings as --key=value)
    --compare [--models=...] [...]      every model on one split, cells on Ray (compare.py)
    --compare --tune_trials=N [...]     every model tuned alike on validation first (tuned.py)
    --tune [--params_file=...] [...]    a Ray Tune search (tune.py)
    --study=NAME [--grid=a,b] [...]     a paper study (studies.py)
    --report=RESULTS_FOLDER             report.md + report.html from its records (nothing else with it)
    --help, -h | --compare --help (--tune, --study) | --help=SETTING       the help (usage.py)

The command line's own options and their defaults are ``properties/commands.yaml`` (``common`` and one
section a mode); every other ``--key=value`` is a RecBole setting, typed without being executed
(``config.typed_value``). Before any work every setting, on the command line and in a config file, a
hyper file or a study file, is checked against the keys the run's layers define and the kind of value
their default has (``known_settings.py``).

One contract for every mode: it returns an ``Outcome`` (what it wrote, what failed) and this module
alone prints and picks the exit status: 0 done; 1 bad input, a failed run or a failed cell; 2 a bad
setting or argument (``UsageError``); 130 interrupted. Errors are one line, ``error: ...``;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from .cells import CellError, check_model_name, check_name, read_config_texts
from .config import parse_overrides
from .errors import InputError, UsageError
from .experiment import studies, tune
from .experiment.compare import parse_marks, parse_models, parse_seeds, run_comparison
from .experiment.tuned import run_tuned_comparison
from .known_settings import MODE_SECTIONS, Registry
from .report.page import write_report
from .run import Outcome, run_recbole_mma4ctr
from .settings import command_options, SettingError
from .usage import general_help, mode_help, setting_help

MODE_FLAGS = {"--compare": "compare", "--tune": "tune", "--study": "study", "--report": "report"}
HELP_FLAGS = ("--help", "-h")
FLAGS = (*MODE_FLAGS, "--debug", *HELP_FLAGS)
VALUE_MODES = {"study": "study", "report": "report"}   # modes given as --name=value
RAY_MODES = ("compare", "tune", "study")
INTERRUPTED = {
    "run": "interrupted; a single run does not resume: rerunning the command trains it again from the start",
    "compare": "interrupted; rerun the same command to resume (finished cells are kept and skipped)",
    "study": "interrupted; rerun the same command to resume (finished points are kept and skipped)",
    "tune": "interrupted; a rerun of --tune starts a new search (the records of finished trials are kept)",
    "report": "interrupted; the report was not written",
}


def main(argv: list[str]) -> int:
    debug = "--debug" in argv
    mode = "run"
    try:
        mode, overrides, wants_help = parse_command(argv)
        if wants_help:
            print(help_text(mode, overrides), flush=True)
            return 0
        if mode in RAY_MODES:
            stop_on_sigterm()
        outcome = run_mode(mode, overrides)
    except KeyboardInterrupt:
        print(f"error: {INTERRUPTED[mode]}", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every error becomes one line unless --debug
        if debug:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    for path in outcome.written:
        print(path, flush=True)
    for failure in outcome.failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if outcome.failures else 0


def one_line(error: Exception) -> str:
    """The error's own first line for bad input and settings; type and a hint for anything else."""
    expected = isinstance(error, (InputError, SettingError, FileNotFoundError))
    text = str(error) if expected else f"{type(error).__name__}: {error}"
    lines = [line for line in text.splitlines() if line.strip()] or [type(error).__name__]
    return lines[0] + ("" if expected else " (--debug shows the traceback)")


def stop_on_sigterm() -> None:
    """SIGTERM ends the command like Ctrl-C: the Ray cluster it started is stopped on the way out."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def parse_command(argv: list[str]) -> tuple[str, dict, bool]:
    """(mode, the --key=value arguments, whether help was asked for); two modes are refused.

    ``--study`` and ``--report`` without a value are accepted only beside ``--help``."""
    wants_help = any(arg in HELP_FLAGS for arg in argv)
    try:
        overrides = parse_overrides([arg for arg in argv if arg not in FLAGS])
    except ValueError as error:
        raise CellError(str(error)) from None
    modes = [MODE_FLAGS[arg] for arg in argv if arg in MODE_FLAGS]
    modes += [mode for key, mode in VALUE_MODES.items() if key in overrides]
    if "report" in modes and len(set(modes)) > 1:
        others = ", ".join(f"--{mode}" for mode in sorted(set(modes) - {"report"}))
        raise CellError(f"--report writes the report of a finished results folder and runs nothing: it does not "
                        f"combine with {others}")
    if len(set(modes)) > 1:
        raise CellError("--compare, --tune, --study and --report are separate modes; give one")
    mode = modes[0] if modes else "run"
    bare = [arg for arg in argv if arg in ("--study", "--report")]
    if bare and not wants_help:
        raise CellError(f"{bare[0]} needs a value: {bare[0]}=" + ("NAME" if bare[0] == "--study" else "RESULTS_FOLDER"))
    return mode, overrides, wants_help or "help" in overrides


def help_text(mode: str, overrides: dict) -> str:
    """``--help=SETTING`` for one setting, else the mode's help (``--help`` alone: the general one)."""
    if overrides.get("help"):
        return setting_help(str(overrides["help"]))
    return general_help() if mode in ("run", "report") else mode_help(mode)


def take_options(mode: str, overrides: dict) -> dict:
    """Take the mode's own options (``properties/commands.yaml``) out of ``overrides``: what the user gave."""
    names = command_options(*MODE_SECTIONS[mode])
    return {key: overrides.pop(key) for key in list(overrides) if key in names}


def run_mode(mode: str, overrides: dict) -> Outcome:
    """Check every setting, then run the mode; returns what it wrote and what failed."""
    if mode == "report":
        return report_mode(overrides)
    study_name = overrides.pop("study", None)
    given = take_options(mode, overrides)
    options = {**command_options(*MODE_SECTIONS[mode]), **given}
    dataset = check_name("dataset", options["dataset"])
    study = studies.load_study(study_name) if mode == "study" else None
    if mode == "compare":
        models = parse_models(str(options["models"]))
    elif mode == "study":
        models = [studies.study_model(study, options["model"])]
    else:
        models = [options["model"]]
    for model in models:
        check_model_name(model)
    registry = Registry(mode, models, dataset, options["protocol"], options["allow_unknown_settings"])
    registry.check_settings(overrides)
    for name, text in read_config_texts(options["config_files"]):
        registry.check_file(name, text)
    config_files, protocol = options["config_files"], options["protocol"]
    if mode == "tune":
        params_file = Path(options["params_file"] or tune.default_params_file(models[0]))
        registry.check_hyper(params_file, tune.read_hyper_file(params_file))
        tune_options = {key: value for key, value in given.items() if key not in command_options("common")}
        return tune.command(models[0], dataset, config_files, overrides, tune_options, protocol)
    if mode == "study":
        registry.check_study(study, studies.STUDY_KEYS)
        study_options = {key: value for key, value in given.items() if key not in command_options("common")}
        return studies.command(study_name, dataset, config_files, overrides, study_options, protocol)
    if mode == "compare":
        engine_options = {key: value for key, value in given.items() if key in command_options("engine")}
        if options["tune_trials"] is not None:
            folder, failed = run_tuned_comparison(models, dataset, options["tune_trials"], given.get("marks"), protocol,
                                                  config_files, overrides, parse_seeds(options["seeds"]), engine_options)
        else:
            folder, failed = run_comparison(models, dataset, given.get("marks"), protocol, config_files, overrides,
                                            parse_seeds(options["seeds"]), engine_options)
        failures = [f"{len(failed)} cell(s) failed: {', '.join(failed)} (their records say why)"] if failed else []
        return Outcome((folder / "comparison.md",), tuple(failures))
    marks = parse_marks(options["marks"]) if options["marks"] is not None else None
    record = run_recbole_mma4ctr(models[0], dataset, config_files, overrides, marks=marks, protocol=protocol)
    return Outcome((record["record_path"],), ())


def report_mode(overrides: dict) -> Outcome:
    """``--report=FOLDER``: report.md and report.html; any other setting is refused (it would do nothing)."""
    folder = overrides.pop("report")
    if overrides:
        raise CellError(f"--report takes no other setting (it only reads the records); got "
                        f"{', '.join('--' + key for key in overrides)}")
    try:
        return Outcome(write_report(folder), ())
    except FileNotFoundError as error:
        raise CellError(str(error)) from None
