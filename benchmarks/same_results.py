"""Do two comparison runs give the same results? Every metric of every record, and the comparison table.

    python benchmarks/same_results.py BEFORE_FOLDER AFTER_FOLDER [--tolerance 0]

Run the same ``--compare`` command twice (for example before and after a refactoring, each in a
fresh temporary folder), then give this script the two results folders
(``results/compare-<dataset>-<protocol>``). It pairs the records by cell name and compares, for
each cell: the status, the test metrics, the best-validation metrics, the test metrics at every
epoch mark and per coldness group, each epoch's training loss and validation metrics, the
number of test rows and their SHA-256, and the trainable parameter count; then every column of
``comparison.json``'s rows. Times, run ids, paths, dates and versions are not compared.
Prints one line per difference and exits 1 if there is any, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

RECORD_FIELDS = ("status", "best_valid", "test", "test_by_epoch", "test_by_coldness", "test_rows",
                 "trainable_parameters", "epochs_run", "steps", "stopped_on", "split_sizes")
HISTORY_FIELDS = ("epoch", "train_loss", "steps", "valid", "best")
ROW_SKIPPED = ("record", "run_id", "where", "train_seconds", "test_seconds", "device")
TIMES = ("seconds",)   # wall times inside the compared fields (test_by_epoch[i].seconds) are not results


def records(folder: Path) -> dict:
    """The folder's result records by cell name (the newest when a cell ran twice)."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "model" in record and "run_id" in record:
            found[record.get("cell") or record["model"]] = record
    return found


def differences(before, after, where: str, tolerance: float):
    """Paths where two JSON values differ (numbers within ``tolerance`` are equal)."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted((set(before) | set(after)) - set(TIMES)):
            if key not in before or key not in after:
                yield f"{where}.{key}: only {'after' if key not in before else 'before'}"
            else:
                yield from differences(before[key], after[key], f"{where}.{key}", tolerance)
    elif isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            yield f"{where}: {len(before)} items before, {len(after)} after"
        for index, (a, b) in enumerate(zip(before, after)):
            yield from differences(a, b, f"{where}[{index}]", tolerance)
    elif isinstance(before, (int, float)) and isinstance(after, (int, float)) and not isinstance(before, bool):
        same_nan = isinstance(before, float) and isinstance(after, float) and math.isnan(before) and math.isnan(after)
        if not same_nan and abs(before - after) > tolerance:
            yield f"{where}: {before!r} before, {after!r} after"
    elif before != after:
        yield f"{where}: {before!r} before, {after!r} after"


def compare(before: Path, after: Path, tolerance: float) -> list[str]:
    found = []
    old, new = records(before), records(after)
    if set(old) != set(new):
        found.append(f"cells: {sorted(old)} before, {sorted(new)} after")
    for cell in sorted(set(old) & set(new)):
        a, b = old[cell], new[cell]
        for field in RECORD_FIELDS:
            found += differences(a.get(field), b.get(field), f"{cell}.{field}", tolerance)
        history = [{k: e.get(k) for k in HISTORY_FIELDS} for e in a.get("history") or []]
        found += differences(history, [{k: e.get(k) for k in HISTORY_FIELDS} for e in b.get("history") or []],
                             f"{cell}.history", tolerance)
    tables = [json.loads((folder / "comparison.json").read_text()) for folder in (before, after)]
    rows = [{row["model"]: {k: v for k, v in row.items() if k not in ROW_SKIPPED} for row in t["rows"]} for t in tables]
    found += differences(rows[0], rows[1], "comparison.json rows", tolerance)
    for key in ("protocol", "marks", "train_to", "same_test_pairs", "seeds", "paired"):
        found += differences(tables[0].get(key), tables[1].get(key), f"comparison.json {key}", tolerance)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.0)
    args = parser.parse_args(argv)
    found = compare(args.before, args.after, args.tolerance)
    for line in found:
        print(line)
    cells = len(records(args.before))
    print(f"{cells} cell(s) compared: {'the same results' if not found else f'{len(found)} difference(s)'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
