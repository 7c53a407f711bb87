"""Argument handling for run_recbole_mma4ctr.py (kept apart so it can be tested)."""

from __future__ import annotations

import sys

from .config import parse_overrides


def main(argv: list[str]) -> int:
    try:
        overrides = parse_overrides(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = overrides.pop("model", "MMa4CTR")
    dataset = overrides.pop("dataset", "wechat")
    config_files = overrides.pop("config_files", None)
    from .quick_start import run_recbole_mma4ctr

    record = run_recbole_mma4ctr(model, dataset, config_files, overrides)
    print(record["record_path"], flush=True)
    return 0
