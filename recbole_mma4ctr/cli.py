"""Argument handling for run_recbole_mma4ctr.py (kept apart so it can be tested).

    --model=M --dataset=D [--key=value ...]            one run (RecBole settings as --key=value)
    --compare --models=all|A,B --dataset=D [--marks=10,20,30,50] [--protocol=honest|paper]

Flags without a value (``--compare``) select a mode; every other argument is ``--key=value``.
"""

from __future__ import annotations

import sys

from .config import parse_overrides

MODES = ("--compare",)


def main(argv: list[str]) -> int:
    modes = {arg for arg in argv if arg in MODES}
    try:
        overrides = parse_overrides([arg for arg in argv if arg not in MODES])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dataset = overrides.pop("dataset", "wechat")
    config_files = overrides.pop("config_files", None)
    marks = overrides.pop("marks", None)
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
