"""Argument handling for run_recbole_mma4ctr.py (kept apart so it can be tested).

    --model=M --dataset=D [--key=value ...]            one run (RecBole settings as --key=value)
    --compare --models=all|A,B --dataset=D [--marks=10,20,30,50] [--protocol=honest|paper]
    --tune --model=M --dataset=D [--params_file=properties/hyper/M.hyper] [--num_samples=8]
           [--cpus_per_trial=1] [--gpus_per_trial=0] [--metric=auc] [--ray_address=auto]   (tune.py)
    --study=NAME --dataset=D [--grid=a,b] [--marks=10,30] [--cpus_per_trial=1] ...        (studies.py)
    --report=RESULTS_FOLDER                            report.md + report.html from its records

Flags without a value (``--compare``, ``--tune``) select a mode; every other argument is
``--key=value``. Only the --tune and --study modes import ray.
"""

from __future__ import annotations

import sys

from .config import parse_overrides

MODES = ("--compare", "--tune")


def main(argv: list[str]) -> int:
    modes = {arg for arg in argv if arg in MODES}
    try:
        overrides = parse_overrides([arg for arg in argv if arg not in MODES])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if "report" in overrides:
        from .report_page import write_report

        try:
            md_path, html_path = write_report(overrides.pop("report"))
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(md_path, flush=True)
        print(html_path, flush=True)
        return 0
    dataset = overrides.pop("dataset", "wechat")
    config_files = overrides.pop("config_files", None)
    marks = overrides.pop("marks", None)
    if len(modes) + ("study" in overrides) > 1:
        print("error: --compare, --tune and --study are separate modes; give one", file=sys.stderr)
        return 2
    if "--tune" in modes and marks is not None:
        print("error: --marks is for --compare and --study; --tune trains up to --epochs", file=sys.stderr)
        return 2
    if "--compare" in modes:
        from .compare import parse_marks, parse_models, run_comparison

        try:
            models = parse_models(overrides.pop("models", "all"))
            protocol = overrides.pop("protocol", "honest")
            results_dir = overrides.pop("results_dir", "results")
            folder = run_comparison(models, dataset, parse_marks(marks), protocol, results_dir, config_files, overrides)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(folder / "comparison.md", flush=True)
        return 0

    if "--tune" in modes:
        from .tune import main as tune_main

        return tune_main(overrides.pop("model", "MMa4CTR"), dataset, config_files, overrides)
    if "study" in overrides:
        from .studies import main as study_main

        return study_main(overrides.pop("study"), dataset, config_files, marks, overrides)

    model = overrides.pop("model", "MMa4CTR")
    record_stem = overrides.pop("record_stem", None)
    comparison_key = overrides.pop("comparison_key", None)
    from .quick_start import run_recbole_mma4ctr

    parsed_marks = None
    if marks is not None:
        from .compare import parse_marks

        parsed_marks = parse_marks(marks)
    record = run_recbole_mma4ctr(model, dataset, config_files, overrides, marks=parsed_marks, record_stem=record_stem,
                                 extra_record={"comparison_key": comparison_key} if comparison_key else None)
    print(record["record_path"], flush=True)
    return 0
