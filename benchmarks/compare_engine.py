"""The comparison engine's speed-up: serial cells against parallel cells, A and B alternating.

    python benchmarks/compare_engine.py [--rounds 1] [--models all] [--marks 1,2] [--workdir DIR]

Both sides run the same command (``--compare`` on the tiny generated WeChat sample with short
histories, ``--MAX_ITEM_LIST_LENGTH=10``, as CI's smoke run) through the engine on a local Ray:
A with ``--cpus_per_run=<all cores>`` (one cell at a time, each with every core's torch threads),
B with ``--cpus_per_run=1`` (as many cells at once as there are cores, one thread each). Each run
starts from an empty results folder (the data are prepared once, before the first round, and
shared). Prints, per round and as medians: wall seconds of A and B, A/B, and for each side the
ratio of wall time to the sum of its cells' own times (``cell_seconds`` in the records: < 1
means cells overlapped).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_side(workdir: Path, cpus: int, models: str, marks: str) -> tuple[float, float]:
    results = workdir / f"results-{cpus}"
    shutil.rmtree(results, ignore_errors=True)
    command = [sys.executable, str(REPO / "run_recbole_mma4ctr.py"), "--compare", f"--models={models}", f"--marks={marks}",
               "--dataset=wechat", "--synthetic_scale=tiny", "--MAX_ITEM_LIST_LENGTH=10", f"--cpus_per_run={cpus}",
               f"--results_dir={results}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"compare with --cpus_per_run={cpus} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    folder = results / "compare-wechat-honest"
    cells = [json.loads(p.read_text()) for p in folder.glob("*.json") if p.name not in ("comparison.json", "progress.json")]
    return wall, sum(float(c.get("cell_seconds") or 0) for c in cells if c.get("status") == "ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--models", default="all")
    parser.add_argument("--marks", default="1,2")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or f"/tmp/rmc-bench-{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; load average before: {os.getloadavg()[0]:.2f}; models {args.models}, marks {args.marks}", flush=True)
    rows = []
    for round_index in range(1, args.rounds + 1):
        serial_wall, serial_cells = run_side(workdir, cores, args.models, args.marks)
        parallel_wall, parallel_cells = run_side(workdir, 1, args.models, args.marks)
        rows.append((serial_wall, parallel_wall, serial_wall / parallel_wall, serial_wall / serial_cells,
                     parallel_wall / parallel_cells))
        print(f"round {round_index}: serial (A, {cores} CPUs a cell) {serial_wall:.1f} s, parallel (B, 1 CPU a cell) "
              f"{parallel_wall:.1f} s, A/B {rows[-1][2]:.2f}; wall / sum of cell times: A {rows[-1][3]:.2f}, "
              f"B {rows[-1][4]:.2f} (load {os.getloadavg()[0]:.2f})", flush=True)
    medians = [statistics.median(column) for column in zip(*rows)]
    print(f"median of {len(rows)} round(s): A {medians[0]:.1f} s, B {medians[1]:.1f} s, speed-up A/B {medians[2]:.2f}x; "
          f"wall / sum of cells: A {medians[3]:.2f}, B {medians[4]:.2f}")


if __name__ == "__main__":
    main()
