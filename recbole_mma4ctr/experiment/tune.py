"""Hyper-parameter tuning with Ray Tune, for MMa4CTR or any RecBole baseline.

``python run_recbole_mma4ctr.py --tune --model=MMa4CTR --dataset=wechat --params_file=properties/hyper/MMa4CTR.hyper``

Options (every other ``--key=value`` is a RecBole setting shared by all trials, e.g. ``--epochs=20``):

=====================  =====================================================================
``--params_file``      search space in RecBole's hyper-file format (default:
                       ``properties/hyper/<model>.hyper``, else ``properties/hyper/default.hyper``)
``--num_samples``      samples drawn from the space (8); every ``grid`` line multiplies them
``--metric``           VALIDATION metric ranked and used by ASHA (the configured ``valid_metric``)
``--grace_period``     epochs every trial gets before ASHA may stop it (2)
``--reduction_factor`` ASHA's rung reduction factor (2)
engine options         ``--cpus_per_run``, ``--gpus_per_run``, ``--ray_address``, ``--max_failures``,
                       ``--ray_tmp`` (``engine.py``)
=====================  =====================================================================

The hyper file holds one dimension a line, ``name kind values`` (RecBole's format; ``#`` starts a
comment line)::

    learning_rate loguniform -9.2,-4.6       # exp(uniform(-9.2, -4.6)): RecBole/hyperopt bounds
    train_batch_size choice [1024,4096]
    mlp_hidden_size choice ['[128,32,4]','[64,16,4]']
    dropout_prob uniform 0,0.5
    embedding_size quniform 16,128,16        # rounded to a multiple of 16 (an int)
    fusion grid ['vat_concat','vt_cross']    # every value, times --num_samples

Kinds: ``choice``, ``grid``, ``uniform``, ``quniform``, ``loguniform`` (natural-log bounds, as
RecBole and hyperopt read them), ``qloguniform`` (natural-log bounds, step q), ``randint``
(low inclusive, high exclusive), ``qrandint``. Values are literals (``ast.literal_eval``): a
hyper file is data, never code.

How it runs: a trial is a cell (``run.run_cell``) like every comparison cell and study point,
scheduled by ``engine.py``: the driver prepares the data once and ships them; each trial reports
its validation metrics after every epoch to ASHA, which stops weak trials; a trial that
finishes is tested once at the end (never used to rank) and writes a full record. Selection
reads validation only.

Output, in ``<results_dir>/tune-<model>-<dataset>/``: one record (and predictions) per trial,
``trials.md``, ``trials.csv`` and ``trials.json`` (every trial: parameters, best validation
metric and its epoch, epochs run, status: completed / early-stopped (validation) / stopped by
ASHA / failed, with the error; the test metric of finished trials beside, not used),
``best.yaml`` (self-contained: the shared settings plus the best finished trial's values; a
failed or stopped trial never becomes it), ``ray/`` (Ray Tune's experiment folders) and ``rt/``
(Ray's temporary files, see ``engine.ray_temp_dir``).
"""

from __future__ import annotations

import ast
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..cells import layered_settings, make_cell
from ..errors import TuneError
from ..record import plain
from ..files import write_text
from ..report import tables
from ..resume_key import PLUMBING
from ..run import say
from ..settings import properties_dir, tooling
from . import engine
from .engine import ENGINE_OPTIONS

KINDS = {  # kind -> number of comma-separated numbers it takes (None: a Python list literal)
    "choice": None, "grid": None, "uniform": 2, "quniform": 3, "loguniform": 2, "qloguniform": 3,
    "randint": 2, "qrandint": 3,
}
# Settings a trial must not change: they decide which data the driver prepared once (and epochs,
# the most ASHA gives a trial).
UNTUNABLE = {"dataset", "data_path", "raw_root", "synthetic_root", "synthetic_scale", "synthetic_seed", "label_action",
             "min_user_actions", "min_user_interactions", "pca_variance", "token_maxlen", "visual_dim", "acoustic_dim",
             "textual_dim", "chunk_rows", "epochs"}


# ---- the search space ----------------------------------------------------------------------------
@dataclass
class Dimension:
    name: str
    kind: str
    values: list      # the choices, or the numbers (bounds, step)
    line: int


def read_hyper_file(path) -> list[Dimension]:
    """Parse a RecBole-style hyper file; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise TuneError(f"params file {path} not found")
    dimensions, seen = [], set()
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        where = f"{path}, line {number}"
        if len(parts) < 3:
            raise TuneError(f"{where}: expected 'name kind values', got {line!r}")
        name, kind, text = parts
        kind = kind.lower()
        if kind not in KINDS:
            raise TuneError(f"{where}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        if name in seen:
            raise TuneError(f"{where}: {name} is given twice")
        if name in UNTUNABLE:
            raise TuneError(f"{where}: {name} cannot be tuned: the data are prepared once before the trials"
                            + (" (set the maximum with --epochs; ASHA decides how many each trial gets)" if name == "epochs" else ""))
        seen.add(name)
        dimensions.append(Dimension(name, kind, _parse_values(kind, text, where), number))
    if not dimensions:
        raise TuneError(f"{path}: no dimension to search (lines 'name kind values')")
    return dimensions


def _parse_values(kind: str, text: str, where: str) -> list:
    if KINDS[kind] is None:
        try:
            values = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError) as error:
            raise TuneError(f"{where}: {kind} needs a list literal such as [1024,4096] ({error})") from None
        if not isinstance(values, (list, tuple)) or not values:
            raise TuneError(f"{where}: {kind} needs a non-empty list, got {text.strip()!r}")
        return [_typed(value) for value in values]
    try:
        numbers = [float(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        raise TuneError(f"{where}: {kind} needs {KINDS[kind]} comma-separated numbers, got {text.strip()!r}") from None
    if len(numbers) != KINDS[kind]:
        raise TuneError(f"{where}: {kind} needs {KINDS[kind]} comma-separated numbers (low,high"
                        + (",q" if KINDS[kind] == 3 else "") + f"), got {text.strip()!r}")
    if numbers[0] >= numbers[1]:
        raise TuneError(f"{where}: low must be below high, got {text.strip()!r}")
    if len(numbers) == 3 and numbers[2] <= 0:
        raise TuneError(f"{where}: the step q must be positive, got {text.strip()!r}")
    return numbers


def _typed(value):
    """A string holding a Python literal (RecBole writes lists as '[64,64]') becomes that value."""
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        return parsed if isinstance(parsed, (list, dict, int, float, bool)) else value
    if isinstance(value, tuple):
        return list(value)
    return value


def search_space(dimensions: list[Dimension]) -> dict:
    """Ray Tune's param_space for the parsed dimensions."""
    from ray import tune

    space = {}
    for dim in dimensions:
        v = dim.values
        if dim.kind == "choice":
            space[dim.name] = tune.choice(v)
        elif dim.kind == "grid":
            space[dim.name] = tune.grid_search(v)
        elif dim.kind == "uniform":
            space[dim.name] = tune.uniform(v[0], v[1])
        elif dim.kind == "quniform":
            space[dim.name] = tune.quniform(v[0], v[1], v[2])
        elif dim.kind == "loguniform":
            space[dim.name] = tune.loguniform(math.exp(v[0]), math.exp(v[1]))
        elif dim.kind == "qloguniform":
            space[dim.name] = tune.qloguniform(math.exp(v[0]), math.exp(v[1]), v[2])
        elif dim.kind == "randint":
            space[dim.name] = tune.randint(int(v[0]), int(v[1]))
        else:
            space[dim.name] = tune.qrandint(int(v[0]), int(v[1]), int(v[2]))
    return space


def integer_dimensions(dimensions: list[Dimension]) -> list[str]:
    """Dimensions whose samples are whole numbers (Ray's q-kinds return floats such as 1024.0)."""
    whole = []
    for dim in dimensions:
        if dim.kind in ("randint", "qrandint"):
            whole.append(dim.name)
        elif dim.kind in ("quniform", "qloguniform") and float(dim.values[2]).is_integer():
            whole.append(dim.name)
    return whole


def trial_value(value, whole: bool = False):
    """A sampled value as a trial passes it to RecBole (``whole``: a float such as 1024.0 -> 1024)."""
    if whole and isinstance(value, float) and value.is_integer():
        return int(value)
    return _typed(value)


def default_params_file(model: str) -> Path:
    own = properties_dir() / "hyper" / f"{model}.hyper"
    return own if own.exists() else properties_dir() / "hyper" / "default.hyper"


# ---- tables ----------------------------------------------------------------------------------------
def _rank_key(row, metric, mode):
    value = row.get(f"best_{metric}")
    if value is None:
        return (1, 0.0)
    return (0, -value if mode == "max" else value)


def write_trial_tables(folder: Path, rows, dimensions, metric: str, mode: str) -> None:
    columns = ["trial"] + [d.name for d in dimensions] + [f"best_{metric}", "best_epoch", "epochs_run", "status",
                                                          f"test_{metric}", "seconds", "error"]
    headers = ["trial"] + [d.name for d in dimensions] + [f"best valid {metric}", "best epoch", "epochs run", "status",
                                                          f"test {metric} (not used)", "seconds", "error"]
    text = (f"# Tuning trials, best first (valid {metric}, {'higher' if mode == 'max' else 'lower'} is better)\n\n"
            + tables.markdown(headers, tables.cells_of(rows, columns, decimals=(f"best_{metric}", f"test_{metric}"))) + "\n\n"
            "Ranked on validation only; the test column is each finished trial's test score, shown for the record "
            "and never used to choose. 'stopped by ASHA': the scheduler ended the trial after its last epoch "
            "here (no test score); 'early-stopped (validation)': RecBole's stopping_step ended it. Each trial's "
            "record is in this folder.\n")
    write_text(folder / "trials.md", text)
    tables.write_csv(folder / "trials.csv", [{k: row.get(k) for k in columns + ["record"]} for row in rows])


def write_best_config(folder: Path, config, base: dict, best: dict, dimensions, metric: str) -> Path:
    """best.yaml: every setting the trials shared (protocol, config files, command line; minus
    those that only place files or pick a device) plus the best trial's values, self-contained:
    ``--config_files=best.yaml`` alone reproduces the trial."""
    import yaml

    settings = {key: plain(value) for key, value in layered_settings(base).items()
                if key not in PLUMBING and key != "eval_step"}
    settings.update({d.name: best[d.name] for d in dimensions})
    header = (f"# Best of the tuning trials of {config['model']} on {config['dataset']}: valid {metric} = "
              f"{best[f'best_{metric}']:.4f} at epoch {best['best_epoch']} (trial {best['trial']}); ranked on "
              f"validation only.\n"
              f"# Use: python run_recbole_mma4ctr.py --model={config['model']} --dataset={config['dataset']} "
              f"--config_files={folder / 'best.yaml'}\n")
    path = folder / "best.yaml"
    write_text(path, header + yaml.safe_dump(settings, sort_keys=False, default_flow_style=False))
    return path


# ---- the tuning run ----------------------------------------------------------------------------------
def metric_mode(metric: str) -> str:
    from recbole.evaluator.register import smaller_metrics

    return "min" if metric.lower() in smaller_metrics else "max"


def run_tuning(model: str, dataset: str, config_files=None, overrides=None, options=None, protocol=None) -> Path:
    """Tune ``model`` on ``dataset``; returns the results folder (see the module docstring)."""
    options = dict(options or {})
    engine_options = engine.parse_options({k: options.pop(k) for k in list(options) if k in engine.ENGINE_OPTIONS})
    options = {**tooling("tune"), **options}
    overrides = dict(overrides or {})
    params_file = Path(options["params_file"] or default_params_file(model))
    dimensions = read_hyper_file(params_file)
    clash = [d.name for d in dimensions if d.name in overrides]
    if clash:
        raise TuneError(f"{', '.join(clash)} given both on the command line and in {params_file}")
    try:
        num_samples = int(options["num_samples"])
        grace_period = int(options["grace_period"])
        reduction_factor = float(options["reduction_factor"])
    except ValueError:
        raise TuneError("--num_samples and --grace_period take whole numbers, --reduction_factor a number") from None
    if num_samples < 1 or grace_period < 1 or reduction_factor <= 1:
        raise TuneError("--num_samples and --grace_period must be >= 1, --reduction_factor > 1")
    engine.check_local_resources(engine_options)
    session = time.strftime("%Y%m%d-%H%M%S")
    base = make_cell(model, dataset, config_files, {**overrides, "eval_step": 1}, kind="tune", protocol=protocol,
                     extra={"tune_session": session}, prepare=False)
    config, _ = engine.prepare_in_driver(base)
    metric = str(options["metric"] or config["valid_metric"]).lower()
    configured = [m.lower() for m in config["metrics"]]
    if metric not in configured:
        raise TuneError(f"--metric={metric} is not among the configured metrics {configured}")
    mode = metric_mode(metric)
    epochs = int(config["epochs"])
    folder = engine.results_folder(config, f"tune-{config['model']}-{config['dataset']}")
    say(f"[tune] {model} on {dataset}: {len(dimensions)} dimension(s) from {params_file}, {num_samples} sample(s), "
        f"up to {epochs} epochs a trial, ranking by VALID {metric} ({mode}); the test split is scored once at the "
        f"end of each finished trial and never used to rank")
    from ray.tune.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(epochs, 1),
                              grace_period=min(grace_period, max(epochs, 1)), reduction_factor=reduction_factor)
    spec = {"base": base, "integers": integer_dimensions(dimensions), "metric": metric, "mode": mode,
            "scheduler": scheduler, "num_samples": num_samples, "space": search_space(dimensions)}
    started = time.time()
    records = engine.run_cells("tune", [], config, folder, engine_options, tune_spec=spec)
    rows = [trial_row(record, dimensions, metric, mode) for record in records.values()]
    rows.sort(key=lambda row: _rank_key(row, metric, mode))
    write_trial_tables(folder, rows, dimensions, metric, mode)
    ok = [row for row in rows if row["status"] in FINISHED and row.get(f"best_{metric}") is not None]
    summary = {"model": model, "dataset": dataset, "metric": metric, "mode": mode, "epochs": epochs,
               "num_samples": num_samples, "params_file": str(params_file.resolve()), "session": session,
               "seconds": round(time.time() - started, 1), "ranked_on": f"validation {metric} only",
               "resources": {"cpus_per_run": engine_options.cpus_per_run, "gpus_per_run": engine_options.gpus_per_run,
                             "ray_address": engine_options.address},
               "trials": rows, "best": ok[0] if ok else None}
    if ok:
        best_path = write_best_config(folder, config, base, ok[0], dimensions, metric)
        summary["best_config"] = str(best_path)

    write_text(folder / "trials.json", json.dumps(summary, indent=2, default=str))
    failed = sum(row["status"] == "failed" for row in rows)
    say(f"[tune] {len(rows)} trial(s) in {time.time() - started:.0f} s: {len(ok)} finished, {failed} failed; "
        f"table: {folder / 'trials.md'}")
    if not ok:
        raise RuntimeError(f"no trial finished with a validation {metric}; no best.yaml written; see "
                           f"{folder / 'trials.md'} and the trial records in {folder}")
    best = ok[0]
    say(f"[tune] best: valid {metric}={best[f'best_{metric}']:.4f} at epoch {best['best_epoch']} with "
        + ", ".join(f"{d.name}={tables.show(best.get(d.name))}" for d in dimensions))
    return folder


FINISHED = ("completed", "early-stopped (validation)")


def trial_row(record: dict, dimensions, metric: str, mode: str) -> dict:
    """One trial of the table, from its record: the best validation value and its epoch (what
    ranks it), and the test value of the finished trial (shown, never used to rank)."""
    params = record.get("params") or {}
    whole = integer_dimensions(dimensions)
    row = {"trial": record["run_id"]}
    row.update({d.name: trial_value(params.get(d.name), d.name in whole) for d in dimensions})
    valid = [(entry["epoch"] + 1, entry["valid"][metric]) for entry in record.get("history") or []
             if (entry.get("valid") or {}).get(metric) is not None and not entry.get("interrupted")]
    best = (max if mode == "max" else min)(valid, key=lambda pair: pair[1]) if valid else (None, None)
    if record["status"] == "ok":
        status = "early-stopped (validation)" if record.get("stopped_on") == "plateau" else "completed"
    else:
        status = {"stopped": "stopped by ASHA", "failed": "failed"}[record["status"]]
    row.update({"status": status, f"best_{metric}": best[1], "best_epoch": best[0],
                "epochs_run": record.get("epochs_run") or len(record.get("history") or []),
                f"test_{metric}": (record.get("test") or {}).get(metric),
                "seconds": record.get("fit_seconds") or record.get("seconds"), "error": record.get("error") or "",
                "record": record.get("record_path")})
    return row


def main(model: str, dataset: str, config_files, overrides: dict, protocol=None) -> int:
    """The ``--tune`` command: pops the tuning options from ``overrides``; returns an exit status."""
    options = {key: overrides.pop(key) for key in list(overrides) if key in tooling("tune") or key in ENGINE_OPTIONS}
    try:
        folder = run_tuning(model, dataset, config_files, overrides, options, protocol)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(folder / "best.yaml", flush=True)
    return 0
