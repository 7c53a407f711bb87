"""Argument handling for ``run_recbole_mma4ctr.py`` / ``python -m recbole_mma4ctr`` (kept apart so it can be tested).

    --model=M --dataset=D [--protocol=honest|paper] [--key=value ...]   one run (RecBole settings as --key=value)
    --compare --models=all|A,B --dataset=D [--marks=10,20,30,50 | --train_to=plateau] [--seeds=2024,7] [--protocol=honest|paper|challenge]
    --tune --model=M --dataset=D [--params_file=...] [--num_samples=8] [--metric=auc]            (tune.py)
    --study=NAME --dataset=D [--grid=a,b] [--marks=10,30]                                         (studies.py)
    --report=RESULTS_FOLDER                            report.md + report.html from its records

--compare, --tune and --study run their cells on Ray (engine.py) and share: --cpus_per_run=1,
--gpus_per_run=0 (fractions allowed), --ray_address=HOST:PORT (else RAY_ADDRESS, else a local
cluster on 127.0.0.1), --max_failures=2, --ray_tmp=DIR. A single run never imports ray.

Flags without a value (``--compare``, ``--tune``, ``--debug``) select a mode; every other argument
is ``--key=value``, and no value is ever executed (``config.typed_value``). Errors are one line:
``error: ...`` with exit status 2 for usage errors and 1 for bad input or a failed run;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import signal
import sys

from .cells import check_name
from .config import parse_overrides
from .errors import CellError, InputError, SettingError, UsageError
from .experiment.compare import parse_marks, parse_models, parse_seeds, run_comparison
from .experiment.engine import pop_options
from .experiment.studies import main as study_main
from .experiment.tune import main as tune_main
from .report.page import write_report
from .run import run_recbole_mma4ctr

MODES = ("--compare", "--tune")
FLAGS = MODES + ("--debug",)


def main(argv: list[str]) -> int:
    debug = "--debug" in argv
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume (finished cells are kept)", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every error becomes one line unless --debug
        if debug:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2 if _is_usage(error) else 1


def _is_usage(error: Exception) -> bool:
    return isinstance(error, UsageError)


def _one_line(error: Exception) -> str:
    """The error's own first line for bad input and settings; type and a hint for anything else."""
    expected = isinstance(error, (InputError, SettingError, FileNotFoundError))
    text = str(error) if expected else f"{type(error).__name__}: {error}"
    lines = [line for line in text.splitlines() if line.strip()] or [type(error).__name__]
    return lines[0] + ("" if expected else " (--debug shows the traceback)")


def _stop_on_sigterm() -> None:
    """SIGTERM ends the command like Ctrl-C: the Ray cluster it started is stopped on the way out."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _dispatch(argv: list[str]) -> int:
    modes = {arg for arg in argv if arg in MODES}
    try:
        overrides = parse_overrides([arg for arg in argv if arg not in FLAGS])
    except ValueError as error:
        raise CellError(str(error)) from None
    if "report" in overrides:
        try:
            md_path, html_path = write_report(overrides.pop("report"))
        except FileNotFoundError as error:
            raise CellError(str(error)) from None
        print(md_path, flush=True)
        print(html_path, flush=True)
        return 0
    dataset = check_name("dataset", overrides.pop("dataset", "wechat"))
    config_files = overrides.pop("config_files", None)
    marks = overrides.pop("marks", None)
    protocol = overrides.pop("protocol", None)
    if len(modes) + ("study" in overrides) > 1:
        raise CellError("--compare, --tune and --study are separate modes; give one")
    if "--tune" in modes and marks is not None:
        raise CellError("--marks is for --compare and --study; --tune trains up to --epochs")
    if modes or "study" in overrides:
        _stop_on_sigterm()
    if "--compare" in modes:
        options = pop_options(overrides)
        models = parse_models(overrides.pop("models", "all"))
        seeds = parse_seeds(overrides.pop("seeds", None))
        folder, failed = run_comparison(models, dataset, marks, protocol or "honest", config_files,
                                        overrides, seeds, options)
        print(folder / "comparison.md", flush=True)
        if failed:
            print(f"error: {len(failed)} cell(s) failed: {', '.join(failed)} (their records say why)", file=sys.stderr)
            return 1
        return 0
    if "--tune" in modes:
        return tune_main(overrides.pop("model", "MMa4CTR"), dataset, config_files, overrides, protocol)
    if "study" in overrides:
        return study_main(overrides.pop("study"), dataset, config_files, marks, overrides, protocol)

    model = overrides.pop("model", "MMa4CTR")

    parsed_marks = None
    if marks is not None:
        parsed_marks = parse_marks(marks)
    record = run_recbole_mma4ctr(model, dataset, config_files, overrides, marks=parsed_marks, protocol=protocol)
    print(record["record_path"], flush=True)
    return 0
