"""One command for the paper's comparison: every model, one split, one set of metrics.

``python run_recbole_mma4ctr.py --compare --models=all --dataset=wechat [--marks=10,20,30,50]``

Each model runs in its own process (``run_recbole_mma4ctr.py --model=M --marks=...``), so one
model running out of memory or hitting a RecBole error is recorded as failed and the others
still run. Results go to ``<results_dir>/compare-<dataset>-<protocol>/``: one record and one
predictions file per model, the child's log, then ``comparison.{md,csv,json}`` and plots. A
rerun with the same settings skips models whose record is complete, so an interrupted
comparison resumes; failed models are tried again.

Protocols: ``honest`` (default: chronological 8:1:1 over all interactions, MMa4CTR's profiles
from the training split) and ``paper`` (the authors': rows grouped by user and split 8:1:1 by
position, MMa4CTR's profiles from all interactions, test labels included).
"""

from __future__ import annotations

import collections
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ALL_MODELS = ["MMa4CTR", "BPR", "FPMC", "NGCF", "LightGCN", "BERT4Rec", "GCSAN", "DIN", "DIEN"]
DEFAULT_MARKS = [10, 20, 30, 50]
RUN_SCRIPT = Path(__file__).resolve().parent.parent / "run_recbole_mma4ctr.py"

PROTOCOLS = {
    "honest": {},
    "paper": {
        "profile_source": "all",
        "eval_args": "{'split': {'RS': [0.8, 0.1, 0.1]}, 'order': 'TO', 'group_by': 'user', 'mode': 'labeled'}",
    },
}


def parse_models(text: str) -> list[str]:
    if text.strip().lower() == "all":
        return list(ALL_MODELS)
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise ValueError("--models needs 'all' or a comma-separated list, e.g. MMa4CTR,DIN")
    return models


def parse_marks(text) -> list[int]:
    if text is None:
        return list(DEFAULT_MARKS)
    marks = sorted({int(m) for m in str(text).replace(" ", "").split(",") if m})
    if not marks or marks[0] < 1:
        raise ValueError(f"--marks needs positive epoch numbers, e.g. 10,20,30,50; got {text!r}")
    return marks


def settings_key(dataset, marks, protocol, config_files, overrides) -> str:
    payload = json.dumps([dataset, marks, protocol, config_files, sorted(overrides.items())], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def finished(folder: Path, model: str, key: str) -> bool:
    path = folder / f"{model}.json"
    if not path.exists():
        return False
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return record.get("status") == "ok" and record.get("comparison_key") == key


def run_one(model: str, dataset: str, marks, folder: Path, config_files, overrides, key: str) -> dict:
    """Run one model in a child process, stream its output, and return its record (or a failure)."""
    command = [sys.executable, str(RUN_SCRIPT), f"--model={model}", f"--dataset={dataset}",
               f"--marks={','.join(map(str, marks))}", f"--record_stem={model}", f"--results_dir={folder}",
               f"--comparison_key={key}"]
    if config_files:
        command.append(f"--config_files={config_files}")
    command += [f"--{k}={v}" for k, v in overrides.items()]
    tail = collections.deque(maxlen=40)
    started = time.time()
    with open(folder / f"{model}.log", "w") as log_file:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in child.stdout:
            log_file.write(line)
            tail.append(line.rstrip())
            if _worth_showing(line):
                print(f"  [{model}] {line.rstrip()}", flush=True)
        returncode = child.wait()
    record_path = folder / f"{model}.json"
    if returncode == 0 and record_path.exists():
        return json.loads(record_path.read_text())
    failure = {
        "status": "failed",
        "model": model,
        "dataset": dataset,
        "returncode": returncode,
        "error": _last_error(tail),
        "log": str(folder / f"{model}.log"),
        "seconds": round(time.time() - started, 1),
        "comparison_key": key,
    }
    record_path.write_text(json.dumps(failure, indent=2))
    return failure


def _worth_showing(line: str) -> bool:
    """Per-epoch progress without RecBole's full log: training, validation and test lines."""
    return any(marker in line for marker in ("training [time", "evaluating [time", "test after epoch", "Error", "error:",
                                             "[prepare", "trainable parameters"))


def _last_error(tail) -> str:
    lines = [line for line in tail if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Killed" in line:
            return line.strip()[:500]
    return (lines[-1] if lines else "no output (killed?)")[:500]


def run_comparison(models, dataset: str, marks=None, protocol: str = "honest", results_dir="results",
                   config_files=None, overrides=None) -> Path:
    """Run every model (skipping finished ones), then write the tables and plots; returns the folder."""
    from .report import write_comparison

    if protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
    marks = parse_marks(marks) if not isinstance(marks, list) else marks
    overrides = {**PROTOCOLS[protocol], **(overrides or {})}
    folder = Path(results_dir) / f"compare-{dataset}-{protocol}"
    folder.mkdir(parents=True, exist_ok=True)
    key = settings_key(dataset, marks, protocol, config_files, overrides)
    started = time.time()
    for index, model in enumerate(models, 1):
        if finished(folder, model, key):
            print(f"[compare {index}/{len(models)}] {model}: finished earlier with the same settings, skipped", flush=True)
            continue
        print(f"[compare {index}/{len(models)}] {model}: training {max(marks)} epochs, testing at {marks}", flush=True)
        record = run_one(model, dataset, marks, folder, config_files, overrides, key)
        if record.get("status") == "ok":
            print(f"[compare {index}/{len(models)}] {model}: done, test AUC {record['test'].get('auc')}", flush=True)
        else:
            print(f"[compare {index}/{len(models)}] {model}: FAILED ({record['error']}); going on", flush=True)
    table = write_comparison(folder, models, marks, protocol)
    print(table, flush=True)
    print(f"comparison of {len(models)} models in {time.time() - started:.0f} s", flush=True)
    return folder
