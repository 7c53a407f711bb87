"""A cell's start-up, from the start of ``run_cell`` to its first training step, against a bare read of its files.

    python benchmarks/cell_startup.py --workdir DIR [--models MMa4CTR,DIN] [--rounds 5] [--cold-rounds 5]
                                      [--epoch-rounds 3] [--scale full]

``DIR`` holds (or links to) ``dataset_atomic/wechat/``, already converted (the benchmark never
prepares data: its cells run with ``prepare: False``, so nothing is written into the data
folders). Every measurement runs in a fresh interpreter; the variants alternate within a round:

- ``bare``: ``pyarrow.csv.read_csv`` of ``wechat.inter`` plus ``np.load`` of every array of
  ``wechat.mm.npz`` (the files a cell reads), timed from the first read to the last;
- ``off``: the cell with ``prepared_store: ~`` (before: RecBole's build, every time);
- ``cold``: the cell with the benchmark's own store emptied first (the build, then writing it);
- ``warm``: the cell with that store holding the entry ``cold`` wrote (mapped, not built).

A cell is the model's one-epoch run stopped after its first optimizer step (``step_budget: 1``,
no validation, no test): its record's ``startup_seconds`` is the start-up, and the process's
peak resident memory (``ru_maxrss``) is printed beside it. ``--cold-rounds`` runs ``off`` and
``cold`` in fewer rounds than the others (a full-scale DIN build takes minutes).

``--epoch-rounds N``: then N whole one-epoch MMa4CTR runs (validation and test included), store
off and store warm alternating: each process's wall time (interpreter start to exit) over its
record's ``train_seconds``. The load average is printed with every line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_bare(folder: Path) -> dict:
    import numpy as np
    import pyarrow.csv as pv

    begun = time.perf_counter()
    table = pv.read_csv(folder / "wechat.inter", parse_options=pv.ParseOptions(delimiter="\t"))
    with np.load(folder / "wechat.mm.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    seconds = time.perf_counter() - begun
    return {"seconds": seconds, "rows": table.num_rows, "arrays": len(arrays), "peak_mb": peak_mb()}


def child_cell(model: str, scale: str, store: str, whole: bool) -> dict:
    sys.path.insert(0, str(REPO))
    from recbole_mma4ctr.cells import make_cell
    from recbole_mma4ctr.run import run_cell

    settings = {"synthetic_scale": scale, "epochs": "1", "show_progress": "False", "log_wandb": "False",
                "prepared_store": store}
    if not whole:
        settings.update(step_budget="1", eval_step="0", test_after_training="False")
    cell = make_cell(model, "wechat", None, settings, kind="run", prepare=False)
    record, _ = run_cell(cell)
    return {"seconds": record["startup_seconds"], "source": record["prepared_data"]["source"],
            "prepared_seconds": record["prepared_data"]["seconds"], "train_seconds": record["train_seconds"],
            "peak_mb": peak_mb()}


def measure(workdir: Path, arguments: list[str]) -> dict:
    """One measurement in a fresh interpreter: its result line, and its wall time."""
    begun = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", *arguments], cwd=workdir, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - begun
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{arguments} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULT "):]), "wall": wall}


def show(name: str, result: dict) -> str:
    extra = f", {result['source']}" if "source" in result else ""
    return f"{name} {result['seconds']:.2f} s (peak {result['peak_mb']:,.0f} MB{extra})"


def startup(workdir: Path, model: str, scale: str, rounds: int, cold_rounds: int, store: Path) -> None:
    folder = workdir / "dataset_atomic" / "wechat"
    kinds = {"bare": [], "off": [], "cold": [], "warm": []}
    for round_ in range(rounds):
        results = {"bare": measure(workdir, ["bare", str(folder)])}
        if round_ < cold_rounds:
            results["off"] = measure(workdir, ["cell", model, scale, "~"])
            shutil.rmtree(store, ignore_errors=True)
            results["cold"] = measure(workdir, ["cell", model, scale, str(store)])
        elif not store.is_dir():
            measure(workdir, ["cell", model, scale, str(store)])
        results["warm"] = measure(workdir, ["cell", model, scale, str(store)])
        for kind, result in results.items():
            kinds[kind].append(result)
        print(f"{model} round {round_ + 1}: " + ", ".join(show(kind, r) for kind, r in results.items())
              + f"  [load {load()}]", flush=True)
    bare = statistics.median(r["seconds"] for r in kinds["bare"])
    print(f"{model}: medians (bare and warm over {rounds} rounds, off and cold over {cold_rounds}):")
    for kind, results in kinds.items():
        seconds = statistics.median(r["seconds"] for r in results)
        peak = statistics.median(r["peak_mb"] for r in results)
        print(f"  {kind:<5} {seconds:7.2f} s = {seconds / bare:5.1f}x the bare read, peak {peak:,.0f} MB")
    print(f"  (load {load()})", flush=True)


def epochs(workdir: Path, scale: str, rounds: int, store: Path) -> None:
    ratios = {"off": [], "warm": []}
    measure(workdir, ["cell", "MMa4CTR", scale, str(store)])    # the store holds MMa4CTR's dataset from here on
    for round_ in range(rounds):
        line = []
        for kind, chosen in (("off", "~"), ("warm", str(store))):
            result = measure(workdir, ["epoch", "MMa4CTR", scale, chosen])
            ratios[kind].append(result["wall"] / result["train_seconds"])
            line.append(f"{kind} wall {result['wall']:.1f} s / train {result['train_seconds']:.1f} s = "
                        f"{ratios[kind][-1]:.2f} (start-up {result['seconds']:.1f} s, peak {result['peak_mb']:,.0f} MB)")
        print(f"MMa4CTR one epoch, round {round_ + 1}: " + "; ".join(line) + f"  [load {load()}]", flush=True)
    print("MMa4CTR one-epoch run, median wall / train: " + ", ".join(
        f"{kind} {statistics.median(values):.2f}" for kind, values in ratios.items()) + f"  (load {load()})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        result = child_bare(Path(rest[0])) if kind == "bare" else child_cell(*rest[:3], whole=kind == "epoch")
        print("RESULT " + json.dumps(result), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="the folder with dataset_atomic/wechat/ (runs write here)")
    parser.add_argument("--models", default="MMa4CTR,DIN")
    parser.add_argument("--scale", default="full", help="synthetic_scale the data were generated at")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold-rounds", type=int, default=None, help="rounds of off and cold (default: --rounds)")
    parser.add_argument("--epoch-rounds", type=int, default=0, help="whole one-epoch MMa4CTR runs, off and warm")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    store = workdir / "cache" / "prepared-benchmark"
    print(f"load average before: {load()} ({os.cpu_count()} cores); data {workdir / 'dataset_atomic' / 'wechat'}",
          flush=True)
    for model in args.models.split(","):
        if model:
            startup(workdir, model, args.scale, args.rounds, min(args.rounds, args.cold_rounds or args.rounds), store)
    if args.epoch_rounds:
        epochs(workdir, args.scale, args.epoch_rounds, store)


if __name__ == "__main__":
    main()
