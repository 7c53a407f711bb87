"""The comparison engine's overheads, A and B alternating: serial vs parallel cells, or full-scale cells with and without the prepared store.

    python benchmarks/compare_engine.py [--rounds 1] [--models all] [--marks 1,2] [--workdir DIR]
    python benchmarks/compare_engine.py --scale full --workdir DIR [--rounds 1] [--seeds 4] [--marks 1]

``--scale tiny`` (default): both sides run the same command (``--compare`` on the tiny generated
WeChat sample with short histories, ``--MAX_ITEM_LIST_LENGTH=10``, as CI's smoke run) through the
engine on a local Ray: A with ``--cpus_per_run=<all cores>`` (one cell at a time, each with every
core's torch threads), B with ``--cpus_per_run=1`` (as many cells at once as there are cores, one
thread each). The data are prepared once, before the first round, and shared. Prints, per round
and as medians: wall seconds of A and B, A/B, and for each side the ratio of wall time to the sum
of its cells' own times (``cell_seconds`` in the records: < 1 means cells overlapped).

``--scale full``: several MMa4CTR cells on one node, on the full-size generated WeChat data, which
``DIR`` must already hold (``dataset/`` and ``dataset_atomic/``, or links to them: run
``run_recbole_mma4ctr.py --model=MMa4CTR --dataset=wechat --synthetic_scale=full`` there once).
Both sides run ``--compare --models=MMa4CTR --seeds=1..N --marks=M --cpus_per_run=1`` (cells two
at a time on two cores): A with the prepared store off (``--prepared_store=~``: every cell builds
its dataset, the "before"), B with an empty store of its own (the first cell builds and writes
it; the others map it, as their build reads no random number: the "after"). The figure of merit
is each side's wall time over the sum of its cells' training times (``train_seconds``): how much
of a table's time is not training. The sum of the cells' ``startup_seconds`` is printed beside.
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


def run_compare(workdir: Path, name: str, arguments: list[str]) -> tuple[float, list[dict]]:
    """Wall seconds of one ``--compare`` run from an empty results folder, and its cells' records."""
    results = workdir / f"results-{name}"
    shutil.rmtree(results, ignore_errors=True)
    command = [sys.executable, str(REPO / "run_recbole_mma4ctr.py"), "--compare", "--dataset=wechat",
               f"--results_dir={results}", *arguments]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"compare {' '.join(arguments)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    folder = results / "compare-wechat-honest"
    cells = [json.loads(p.read_text()) for p in folder.glob("*.json") if p.name not in ("comparison.json", "progress.json")]
    return wall, [cell for cell in cells if cell.get("status") == "ok"]


def total(cells: list[dict], field: str) -> float:
    return sum(float(cell.get(field) or 0) for cell in cells)


def tiny_rounds(args, workdir: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; load average before: {os.getloadavg()[0]:.2f}; models {args.models}, marks {args.marks}", flush=True)
    common = [f"--models={args.models}", f"--marks={args.marks}", "--synthetic_scale=tiny", "--MAX_ITEM_LIST_LENGTH=10"]
    rows = []
    for round_index in range(1, args.rounds + 1):
        serial_wall, serial = run_compare(workdir, "serial", [*common, f"--cpus_per_run={cores}"])
        parallel_wall, parallel = run_compare(workdir, "parallel", [*common, "--cpus_per_run=1"])
        rows.append((serial_wall, parallel_wall, serial_wall / parallel_wall, serial_wall / total(serial, "cell_seconds"),
                     parallel_wall / total(parallel, "cell_seconds")))
        print(f"round {round_index}: serial (A, {cores} CPUs a cell) {serial_wall:.1f} s, parallel (B, 1 CPU a cell) "
              f"{parallel_wall:.1f} s, A/B {rows[-1][2]:.2f}; wall / sum of cell times: A {rows[-1][3]:.2f}, "
              f"B {rows[-1][4]:.2f} (load {os.getloadavg()[0]:.2f})", flush=True)
    medians = [statistics.median(column) for column in zip(*rows)]
    print(f"median of {len(rows)} round(s): A {medians[0]:.1f} s, B {medians[1]:.1f} s, speed-up A/B {medians[2]:.2f}x; "
          f"wall / sum of cells: A {medians[3]:.2f}, B {medians[4]:.2f}")


def full_rounds(args, workdir: Path) -> None:
    if not (workdir / "dataset_atomic" / "wechat" / "wechat.inter").exists():
        sys.exit(f"{workdir}/dataset_atomic/wechat holds no converted full-scale data (see --help)")
    seeds = ",".join(str(seed) for seed in range(1, args.seeds + 1))
    common = ["--models=MMa4CTR", f"--seeds={seeds}", f"--marks={args.marks}", "--synthetic_scale=full", "--cpus_per_run=1"]
    print(f"{args.seeds} MMa4CTR cells, marks {args.marks}, two at a time; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    ratios = {"before": [], "after": []}
    for round_index in range(1, args.rounds + 1):
        store = workdir / "store-bench"
        shutil.rmtree(store, ignore_errors=True)
        for side, extra in (("before", ["--prepared_store=~"]), ("after", [f"--prepared_store={store}"])):
            wall, cells = run_compare(workdir, side, [*common, *extra])
            train, startup = total(cells, "train_seconds"), total(cells, "startup_seconds")
            sources = sorted(cell.get("prepared_data", {}).get("source", "?") for cell in cells)
            ratios[side].append(wall / train)
            print(f"round {round_index} {side} ({'store off' if side == 'before' else 'store on, empty at the start'}): "
                  f"wall {wall:.1f} s, sum of train {train:.1f} s, wall / train {wall / train:.2f}; "
                  f"sum of start-ups {startup:.1f} s; datasets {', '.join(sources)} "
                  f"(load {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
        shutil.rmtree(store, ignore_errors=True)
    before, after = statistics.median(ratios["before"]), statistics.median(ratios["after"])
    print(f"median of {args.rounds} round(s), wall / sum of the cells' training: before {before:.2f}, after {after:.2f} "
          f"(wall time per second of training {before / after:.2f}x lower)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--models", default="all", help="tiny only")
    parser.add_argument("--marks", default=None, help="default 1,2 (tiny), 1 (full)")
    parser.add_argument("--seeds", type=int, default=4, help="full only: MMa4CTR cells per side")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if args.scale == "full" and not args.workdir:
        parser.error("--scale full needs --workdir holding the converted full-scale data")
    args.marks = args.marks or ("1,2" if args.scale == "tiny" else "1")
    workdir = Path(args.workdir or f"/tmp/rmc-bench-{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    (tiny_rounds if args.scale == "tiny" else full_rounds)(args, workdir)


if __name__ == "__main__":
    main()
