"""One epoch of every model on the WeChat sample: train and test seconds, next to MMa4CTR's.

    python benchmarks/baseline_epochs.py [--workdir /tmp/bench] [--models BPR,DIN] [--epochs 1]
                                         [--key=value ...]

Each model runs in its own process through the project's command line
(``run_recbole_mma4ctr.py --model=M --dataset=wechat --epochs=1``) in ``--workdir`` (the sample
is generated and converted there on the first run, then reused), so every model sees the same
atomic files, split and metrics. The table reads the result records: seconds of training per
epoch (``train_seconds / epochs_run``), seconds to score the test split once (``test_seconds``,
checkpoint load included), each as a ratio to MMa4CTR's in the same invocation, the test AUC and
LogLoss, the trainable parameters, and the whole run's wall and CPU seconds (CPU seconds
hardly move with the machine's load; their ratio to MMa4CTR is the steadier figure). The paper's
WeChat timings (docs/comparison.md, "The paper's published numbers") are shown as ratios for
comparison. Timings on a shared machine move with its load: the load
average before and after is printed, and ratios from one invocation are what to compare.
Extra ``--key=value`` arguments are passed to every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = ["MMa4CTR", "BPR", "FPMC", "NGCF", "LightGCN", "BERT4Rec", "GCSAN", "DIN", "DIEN"]
RANKING = {"BPR", "FPMC", "NGCF", "LightGCN", "BERT4Rec", "GCSAN"}  # predict() returns raw scores
# the paper's WeChat train and test seconds on an RTX 3090 (docs/comparison.md, "The paper's
# published numbers")
PAPER_SECONDS = {
    "BPR": (54.77, 45), "FPMC": (62.43, 48), "NGCF": (126.54, 109), "LightGCN": (91.54, 79),
    "BERT4Rec": (471.41, 317), "GCSAN": (4756.09, 4385), "DIN": (170.44, 108), "DIEN": (643.73, 243),
    "MMa4CTR": (180.78, 17),
}


def run_model(model: str, workdir: Path, epochs: int, extra: list[str], timeout: int) -> dict:
    command = [sys.executable, str(REPO / "run_recbole_mma4ctr.py"), f"--model={model}", "--dataset=wechat",
               f"--epochs={epochs}", "--show_progress=False", *extra]
    started, cpu_before = time.time(), children_cpu_seconds()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    wall, cpu = time.time() - started, children_cpu_seconds() - cpu_before
    if done.returncode != 0:
        return {"model": model, "error": (done.stdout + done.stderr).strip().splitlines()[-1:] or ["failed"],
                "wall": wall, "cpu": cpu}
    path = Path(done.stdout.strip().splitlines()[-1])
    record = json.loads((path if path.is_absolute() else workdir / path).read_text())
    record.update(wall=wall, cpu=cpu)
    return record


def children_cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) of the finished child processes so far: unlike
    wall time, it hardly grows when other jobs share the cores."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ratio(value, reference) -> str:
    return f"{value / reference:.2f}" if value is not None and reference else "-"


def table(records: list[dict]) -> str:
    by_model = {r["model"]: r for r in records}
    reference = by_model.get("MMa4CTR")
    ref_train = reference and not reference.get("error") and reference["train_seconds"] / max(1, reference["epochs_run"])
    ref_test = reference and not reference.get("error") and reference["test_seconds"]
    ref_cpu = reference and not reference.get("error") and reference["cpu"]
    header = (f"{'model':<9} {'train s/ep':>10} {'x MMa4CTR':>9} {'test s':>7} {'x MMa4CTR':>9} "
              f"{'paper train x':>13} {'paper test x':>12} {'test AUC':>8} {'LogLoss':>8} {'params':>10} {'run s':>6} "
              f"{'run cpu s':>9} {'x MMa4CTR':>9}")
    lines = [header, "-" * len(header)]
    paper_ref = PAPER_SECONDS["MMa4CTR"]
    for record in records:
        model = record["model"]
        paper = PAPER_SECONDS.get(model)
        paper_train = ratio(paper[0], paper_ref[0]) if paper else "-"
        paper_test = ratio(paper[1], paper_ref[1]) if paper else "-"
        if record.get("error"):
            lines.append(f"{model:<9} failed: {record['error'][0][:100]}")
            continue
        train = record["train_seconds"] / max(1, record["epochs_run"])
        test = record["test_seconds"]
        squashed = "*" if record.get("logloss_on", "sigmoid(score)" if model in RANKING else None) == "sigmoid(score)" else " "
        lines.append(f"{model:<9} {train:>10.2f} {ratio(train, ref_train):>9} {test:>7.2f} {ratio(test, ref_test):>9} "
                     f"{paper_train:>13} {paper_test:>12} {record['test']['auc']:>8.4f} "
                     f"{record['test']['logloss']:>7.4f}{squashed} {record['trainable_parameters']:>10,} {record['wall']:>6.0f} "
                     f"{record['cpu']:>9.0f} {ratio(record['cpu'], ref_cpu):>9}")
    lines.append("* LogLoss of sigmoid(score): the model's predict returns a raw ranking score")
    lines.append("run s / run cpu s: the whole run (data loading, training, validation, test) in wall and CPU seconds")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/mma4ctr-baseline-epochs", help="scratch folder for data, records, checkpoints")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated; MMa4CTR is always run first")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per model")
    args, extra = parser.parse_known_args(argv)
    models = [m for m in args.models.split(",") if m]
    models = ["MMa4CTR"] + [m for m in models if m != "MMa4CTR"]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir {workdir}; {os.cpu_count()} cores; load average before {os.getloadavg()}", flush=True)
    records = []
    for model in models:
        record = run_model(model, workdir, args.epochs, extra, args.timeout)
        records.append(record)
        summary = "failed" if record.get("error") else (
            f"train {record['train_seconds']:.1f} s, test {record['test_seconds']:.1f} s, auc {record['test']['auc']:.4f}")
        print(f"  {model}: {summary} ({record['wall']:.0f} s run)", flush=True)
    print(f"load average after {os.getloadavg()}")
    print(table(records))
    keep = ("model", "train_seconds", "test_seconds", "epochs_run", "test", "best_valid", "trainable_parameters",
            "wall", "cpu", "error", "record_path", "device")
    out = workdir / f"baseline_epochs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps([{k: r.get(k) for k in keep} for r in records], indent=2))
    print(out)
    return 0 if not any(r.get("error") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
