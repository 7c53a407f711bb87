"""Hyper-parameter tuning with Ray Tune, for MMa4CTR or any RecBole baseline.

``python run_recbole_mma4ctr.py --tune --model=MMa4CTR --dataset=wechat --params_file=properties/hyper/MMa4CTR.hyper``

Options, their defaults in ``properties/commands.yaml`` (``tune:`` and ``engine:``; ``--tune --help``
prints them); every other ``--key=value`` is a RecBole setting shared by all trials, e.g. ``--epochs=20``:

=====================  =====================================================================
``--params_file``      search space in RecBole's hyper-file format (default:
                       ``properties/hyper/<model>.hyper``, else ``properties/hyper/default.hyper``)
``--num_samples``      samples drawn from the space; every ``grid`` line multiplies them
``--metric``           VALIDATION metric ranked and used by ASHA (the configured ``valid_metric``)
``--grace_period``     epochs every trial gets before ASHA may stop it
``--reduction_factor`` ASHA's rung reduction factor
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
(low inclusive, high exclusive), ``qrandint`` (a multiple of q within [low, high]). Values are
literals (``ast.literal_eval``): a hyper file is data, never code. A data setting (one that
decides the atomic files: ``prepare.sources.data_settings``, read from the converters) and
``epochs`` are refused, naming the file, line and key: the driver prepares the data once for
every trial, so a trial cannot change them (a study can: it prepares the data of each point).

The samples (``draw_points``): for every combination of the ``grid`` lines, ``--num_samples``
draws of the other dimensions, seeded by the run's ``seed``, each distinct from the draws before
it (a repeat is drawn again). When the other dimensions hold fewer distinct settings than
``--num_samples`` (two choices, three samples), each setting is run once and the rest are counted
as duplicates, not run; the summary says ``asked = run now + finished earlier + duplicates``.

How it runs: each sample is a cell (``run.run_cell``) like every comparison cell and study point,
named ``trial<k>-<its values>``, scheduled by ``engine.py`` under ASHA: the driver prepares the
data once and ships them; each trial reports its validation metrics after every epoch to ASHA,
which stops weak trials; a trial that finishes is tested once at the end (never used to rank)
and writes a full record. Selection reads validation only. A trial whose record (same settings,
data and code) is in the folder already is reused, not run again, so the same command resumes an
interrupted tune.

Output, in ``<results_dir>/tune-<model>-<dataset>/`` (the model as named: ``tune-DeepFM+mm-wechat``):
one record (and predictions) per trial, ``trials.md``, ``trials.csv`` and ``trials.json`` (the
counts; every trial: parameters, best validation metric and its epoch, epochs run, status:
completed / early-stopped (validation) / stopped by ASHA / failed, with the error / finished
earlier; the test metric of finished trials beside, not used), ``best.yaml`` (every setting the
best trial by validation ran with, finished or stopped by ASHA (``best_trial``); its header gives
the command that reproduces it, with the model as named; a failed trial never becomes it), ``ray/`` (Ray Tune's experiment folders) and
``rt/`` (Ray's temporary files, see ``engine.ray_temp_dir``). One command drives the folder at a
time (``engine.claim_folder``).
"""

from __future__ import annotations

import ast
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..cells import layered_settings, make_cell
from ..errors import TuneError
from ..files import write_text
from ..prepare.sources import data_settings
from ..record import plain
from ..report import tables
from ..run import Outcome, say
from ..settings import command_options, properties_dir
from . import engine

KINDS = {  # kind -> number of comma-separated numbers it takes (None: a Python list literal)
    "choice": None, "grid": None, "uniform": 2, "quniform": 3, "loguniform": 2, "qloguniform": 3,
    "randint": 2, "qrandint": 3,
}
TUNE_DEFAULTS = command_options("tune")   # properties/commands.yaml


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
        if name == "epochs":
            raise TuneError(f"{where}: epochs cannot be tuned: set the maximum with --epochs; ASHA decides how many "
                            f"each trial gets")
        if name in data_settings():
            raise TuneError(f"{where}: {name} is a data setting and cannot be tuned: --tune prepares the data once "
                            f"for every trial (give it as --{name}=..., or vary it with a study, which prepares the "
                            f"data of each point)")
        seen.add(name)
        dimensions.append(Dimension(name, kind, _parse_values(kind, text, where), number))
        if distinct_values(dimensions[-1]) == []:
            raise TuneError(f"{where}: no value of {kind} {text.strip()} lies within its bounds (no multiple of q "
                            f"between low and high)")
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


def distinct_values(dim: Dimension) -> list | None:
    """Every value a discrete dimension can take, in order (None for a continuous one): the
    choices; randint's low..high-1; the multiples of q within [low, high] for the q-kinds."""
    v = dim.values
    if dim.kind in ("choice", "grid"):
        return list({json.dumps(value, sort_keys=True): value for value in v}.values())
    if dim.kind == "randint":
        return list(range(int(v[0]), int(v[1])))
    if dim.kind in ("qrandint", "quniform", "qloguniform"):
        low, high = (v[0], v[1]) if dim.kind != "qloguniform" else (math.exp(v[0]), math.exp(v[1]))
        steps = range(math.ceil(low / v[2] - 1e-9), math.floor(high / v[2] + 1e-9) + 1)
        return [quantized(k * v[2], dim) for k in steps]
    return None


def quantized(value: float, dim: Dimension):
    """A q-kind sample as a trial gets it: a whole number when q is one (1024, not 1024.0)."""
    if float(dim.values[2]).is_integer():
        return int(round(value))
    return round(value, 12)


def draw_value(dim: Dimension, rng):
    """One sample of a non-grid dimension (``rng``: numpy's Generator). Bounds as RecBole reads
    them: loguniform's are natural logs; a q-kind is rounded to a multiple of q inside the bounds."""
    v = dim.values
    if dim.kind == "choice":
        return dim.values[int(rng.integers(len(v)))]
    if dim.kind == "randint":
        return int(rng.integers(int(v[0]), int(v[1])))
    if dim.kind == "uniform":
        return float(rng.uniform(v[0], v[1]))
    if dim.kind == "loguniform":
        return float(math.exp(rng.uniform(v[0], v[1])))
    allowed = distinct_values(dim)
    raw = rng.uniform(v[0], v[1] + (1 if dim.kind == "qrandint" else 0))
    raw = math.exp(raw) if dim.kind == "qloguniform" else raw
    nearest = quantized(round(raw / v[2]) * v[2], dim)
    return min(max(nearest, allowed[0]), allowed[-1])


def space_size(dimensions: list[Dimension]) -> int | None:
    """How many distinct settings the non-grid dimensions hold (None: infinitely many)."""
    size = 1
    for dim in dimensions:
        values = distinct_values(dim)
        if values is None:
            return None
        size *= len(values)
    return size


def draw_points(dimensions: list[Dimension], num_samples: int, seed: int) -> tuple[list[dict], int]:
    """The trials' settings: for every combination of the ``grid`` lines, ``num_samples`` draws of
    the other dimensions, each distinct from the draws before it (a repeat is drawn again). When
    the other dimensions hold fewer distinct settings than ``num_samples``, every one of them is
    taken and the rest are duplicates, not run. Returns (points, duplicates). Seeded per grid
    combination (``seed``, its index), so a larger ``num_samples`` keeps the earlier draws."""
    import itertools

    import numpy as np

    grid = [d for d in dimensions if d.kind == "grid"]
    others = [d for d in dimensions if d.kind != "grid"]
    size = space_size(others)
    points, duplicates = [], 0
    combos = itertools.product(*(distinct_values(d) for d in grid))
    for index, combo in enumerate(combos):
        fixed = dict(zip((d.name for d in grid), combo))
        if size is not None and size <= num_samples:
            every = itertools.product(*(distinct_values(d) for d in others))
            points += [{**fixed, **dict(zip((d.name for d in others), values))} for values in every]
            duplicates += num_samples - size
            continue
        rng, seen = np.random.default_rng([int(seed), index]), set()
        while len(seen) < num_samples:
            point = {**fixed, **{d.name: draw_value(d, rng) for d in others}}
            text = json.dumps(point, sort_keys=True)
            if text not in seen:
                seen.add(text)
                points.append(point)
    return points, duplicates


def default_params_file(model: str) -> Path:
    own = properties_dir() / "hyper" / f"{model}.hyper"
    return own if own.exists() else properties_dir() / "hyper" / "default.hyper"


# ---- tables ----------------------------------------------------------------------------------------
def _rank_key(row, metric, mode):
    value = row.get(f"best_{metric}")
    if value is None:
        return (1, 0.0)
    return (0, -value if mode == "max" else value)


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def write_trial_tables(folder: Path, summary: dict, dimensions) -> None:
    """trials.md and trials.csv: every trial of ``summary`` (best first) and how the samples asked
    were spent (``counts``)."""

    metric, mode, rows = summary["metric"], summary["mode"], summary["trials"]
    columns = ["trial"] + [d.name for d in dimensions] + [f"best_{metric}", "best_epoch", "epochs_run", "status",
                                                          f"test_{metric}", "seconds", "error"]
    headers = ["trial"] + [d.name for d in dimensions] + [f"best valid {metric}", "best epoch", "epochs run", "status",
                                                          f"test {metric} (not used)", "seconds", "error"]
    text = (f"# Tuning trials of {summary['model']} on {summary['dataset']}, best first (valid {metric}, "
            f"{'higher' if mode == 'max' else 'lower'} is better)\n\n{counts_line(summary['counts'])}\n\n"
            + tables.markdown(headers, tables.cells_of(rows, columns, decimals=(f"best_{metric}", f"test_{metric}"))) + "\n\n"
            "Ranked on validation only; the test column is each finished trial's test score, shown for the record "
            "and never used to choose. 'stopped by ASHA': the scheduler ended the trial after its last epoch "
            "here (no test score); 'early-stopped (validation)': RecBole's stopping_step ended it; 'finished "
            "earlier': a record with the same settings, data and code was in this folder and is reused. Each "
            "trial's record is in this folder.\n")
    write_text(folder / "trials.md", text)
    tables.write_csv(folder / "trials.csv", [{k: row.get(k) for k in columns + ["record"]} for row in rows])


def counts_line(counts: dict) -> str:
    """How the samples asked were spent; the parts add up to ``asked``."""
    return (f"{counts['asked']} sample(s) asked: {counts['run']} run now, {counts['reused']} finished earlier with the "
            f"same settings (reused), {counts['duplicates']} duplicate(s) of another trial's settings not run "
            f"({counts['space']}).")


def write_best_config(folder: Path, summary: dict, cell: dict) -> Path:
    """best.yaml: every setting the chosen trial (``best_trial``) ran with (protocol file, config files,
    command line, the sampled values), self-contained. Its header gives the command that
    reproduces that trial: the model as the user named it (``DeepFM+mm``: the name decides the
    model's features), the dataset, the protocol, and ``--config_files=best.yaml``."""
    import yaml


    best, metric = summary["best"], summary["metric"]
    settings = {key: plain(value) for key, value in layered_settings(cell).items()}
    path = folder / "best.yaml"
    protocol = f" --protocol={cell['protocol']}" if cell.get("protocol") else ""
    header = (f"# Best of the tuning trials of {cell['model']} on {cell['dataset']}: valid {metric} = "
              f"{best[f'best_{metric}']:.4f} at epoch {best['best_epoch']} ({best['trial']}, {best['status']}); "
              f"ranked on validation only.\n"
              f"# Use: python run_recbole_mma4ctr.py --model={cell['model']} --dataset={cell['dataset']}{protocol} "
              f"--config_files={path}\n")
    write_text(path, header + yaml.safe_dump(settings, sort_keys=False, default_flow_style=False))
    return path


# ---- the tuning run ----------------------------------------------------------------------------------
def metric_mode(metric: str) -> str:
    from recbole.evaluator.register import smaller_metrics

    return "min" if metric.lower() in smaller_metrics else "max"


def trial_name(index: int, point: dict) -> str:
    """A trial's cell name: ``trial3-learning_rate=0.001,train_batch_size=1024``."""
    return f"trial{index}-" + ",".join(f"{key}={_show(value)}".replace(" ", "") for key, value in point.items())


def run_tuning(model: str, dataset: str, config_files=None, overrides=None, options=None, protocol=None) -> Path:
    """Tune ``model`` on ``dataset``; returns the results folder (see the module docstring)."""
    options = dict(options or {})
    engine_options = engine.parse_options({k: options.pop(k) for k in list(options) if k in engine.ENGINE_OPTIONS})
    options = {**TUNE_DEFAULTS, **options}
    shared = {**(overrides or {}), "eval_step": 1}
    params_file = Path(options["params_file"] or default_params_file(model))
    dimensions = read_hyper_file(params_file)
    clash = [d.name for d in dimensions if d.name in (overrides or {})]
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
    config = engine.driver_config(make_cell(model, dataset, config_files, shared, kind="tune", protocol=protocol))
    metric = str(options["metric"] or config["valid_metric"]).lower()
    configured = [m.lower() for m in config["metrics"]]
    if metric not in configured:
        raise TuneError(f"--metric={metric} is not among the configured metrics {configured}")
    mode, epochs = metric_mode(metric), int(config["epochs"])
    points, duplicates = draw_points(dimensions, num_samples, int(config["seed"]))
    cells = [make_cell(model, dataset, config_files, {**shared, **point}, kind="tune", protocol=protocol,
                       name=trial_name(index, point), prepare=False, extra={"tune_session": session, "params": point})
             for index, point in enumerate(points, 1)]
    config, folder, done = engine.prepare_grid(cells, f"tune-{model}-{dataset}")
    try:
        return tune_in(folder, config, cells, done, engine_options, {
            "model": model, "dataset": dataset, "metric": metric, "mode": mode, "epochs": epochs,
            "num_samples": num_samples, "params_file": str(params_file.resolve()), "session": session,
            "grace_period": grace_period, "reduction_factor": reduction_factor,
            "counts": {"asked": len(points) + duplicates, "run": len([c for c in cells if c["key"] not in done]),
                       "reused": len([c for c in cells if c["key"] in done]), "duplicates": duplicates,
                       "space": space_words(dimensions)}}, dimensions)
    finally:
        engine.release_folder(folder)


def space_words(dimensions: list[Dimension]) -> str:
    """How many distinct settings the search space holds, in words."""
    size = space_size([d for d in dimensions if d.kind != "grid"])
    grid = space_size([d for d in dimensions if d.kind == "grid"])
    per = f" for each of the {grid} grid combination(s)" if grid > 1 else ""
    return f"the space holds {'infinitely many' if size is None else size} distinct setting(s){per}"


def tune_in(folder: Path, config, cells: list[dict], done: dict, engine_options, summary: dict, dimensions) -> Path:
    """Run the trials ``done`` does not answer on Ray under ASHA, then write the tables and
    best.yaml into ``folder``; ``summary`` (the run's description) goes to trials.json."""

    metric, mode, epochs = summary["metric"], summary["mode"], summary["epochs"]
    pending = [cell for cell in cells if cell["key"] not in done]
    say(f"[tune] {summary['model']} on {summary['dataset']}: {len(dimensions)} dimension(s) from "
        f"{summary['params_file']}; {counts_line(summary['counts'])} Up to {epochs} epochs a trial, ranking by VALID "
        f"{metric} ({mode}); " + ("the test split is scored once at the end of each finished trial and never used to "
                                  "rank" if config["test_after_training"] else "the trials never score the test split"))
    started = time.time()
    records = dict(done)
    if pending:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(epochs, 1),
                                  grace_period=min(summary["grace_period"], max(epochs, 1)),
                                  reduction_factor=summary["reduction_factor"])
        spec = {"metric": metric, "mode": mode, "scheduler": scheduler}
        records.update(engine.run_cells("tune", pending, config, folder, engine_options, tune_spec=spec))
    rows = [trial_row(cell, records.get(cell["key"]), dimensions, metric, mode, cell["key"] in done) for cell in cells]
    rows.sort(key=lambda row: _rank_key(row, metric, mode))
    best = best_trial(rows, metric)
    summary.update(seconds=round(time.time() - started, 1), ranked_on=f"validation {metric} only",
                   resources={"cpus_per_run": engine_options.cpus_per_run, "gpus_per_run": engine_options.gpus_per_run,
                              "ray_address": engine_options.address},
                   trials=rows, best=best)
    write_trial_tables(folder, summary, dimensions)
    if best:
        best_cell = next(cell for cell in cells if cell["cell"] == best["trial"])
        summary["best_config"] = str(write_best_config(folder, summary, best_cell))
    write_text(folder / "trials.json", json.dumps(summary, indent=2, default=str))
    states = [row["status"] for row in rows]
    say(f"[tune] {len(rows)} trial(s) in {time.time() - started:.0f} s: "
        + ", ".join(f"{states.count(state)} {state}" for state in dict.fromkeys(states))
        + f"; {summary['counts']['duplicates']} duplicate sample(s) not run; table: {folder / 'trials.md'}")
    if not best:
        raise RuntimeError(f"no trial finished or was stopped by ASHA with a validation {metric}; no best.yaml "
                           f"written; see {folder / 'trials.md'} and the trial records in {folder}")
    say(f"[tune] best: valid {metric}={best[f'best_{metric}']:.4f} at epoch {best['best_epoch']} ({best['status']}) with "
        + ", ".join(f"{d.name}={tables.show(best.get(d.name))}" for d in dimensions))
    return folder


FINISHED = ("completed", "early-stopped (validation)", "finished earlier")
CHOOSABLE = FINISHED + ("stopped by ASHA",)


def best_trial(rows: list[dict], metric: str) -> dict | None:
    """The trial whose settings are chosen: the first of ``rows`` (ranked best first by their best
    validation value) that finished or was stopped by ASHA and has a validation value; None if none.

    Why stopped trials count: ASHA stops a trial at a rung when its latest value there falls below
    the others', not its best; a trial that validated best at epoch 3 and was stopped at epoch 4
    holds the best point the budget found (Ray Tune's ``get_best_result(scope="all")`` ranks the
    same way). The chosen settings are then run in full, so nothing rests on the trial having
    finished. A failed trial never counts: its values may come from a broken run."""
    return next((row for row in rows if row["status"] in CHOOSABLE and row.get(f"best_{metric}") is not None), None)


def trial_row(cell: dict, record: dict | None, dimensions, metric: str, mode: str, reused: bool) -> dict:
    """One trial of the table (``cell``), from its record: the best validation value and its epoch
    (what ranks it), and the test value of a finished trial (shown, never used to rank). A reused
    record (``reused``: finished by an earlier command) says so; a trial without a record (its
    driver died) is listed as such."""
    row = {"trial": cell["cell"], **{d.name: cell["extra"]["params"].get(d.name) for d in dimensions}}
    if record is None:
        return {**row, "status": "no record", "error": "the driver ended before this trial's record was written"}
    valid = [(entry["epoch"] + 1, entry["valid"][metric]) for entry in record.get("history") or []
             if (entry.get("valid") or {}).get(metric) is not None and not entry.get("interrupted")]
    best = (max if mode == "max" else min)(valid, key=lambda pair: pair[1]) if valid else (None, None)
    if record["status"] == "ok":
        status = "finished earlier" if reused else \
            "early-stopped (validation)" if record.get("stopped_on") == "plateau" else "completed"
    else:
        status = {"stopped": "stopped by ASHA", "failed": "failed"}[record["status"]]
    row.update({"status": status, f"best_{metric}": best[1], "best_epoch": best[0],
                "epochs_run": record.get("epochs_run") or len(record.get("history") or []),
                f"test_{metric}": (record.get("test") or {}).get(metric),
                "seconds": record.get("fit_seconds") or record.get("seconds"), "error": record.get("error") or "",
                "record": record.get("record_path")})
    return row


def command(model: str, dataset: str, config_files, overrides: dict, options: dict, protocol=None) -> Outcome:
    """The ``--tune`` command: ``options`` are the tuning and engine options the user gave; returns
    best.yaml, or why no trial finished (the tables are written either way)."""
    options = {key: value for key, value in options.items() if key != "model"}
    try:
        folder = run_tuning(model, dataset, config_files, overrides, options, protocol)
    except RuntimeError as error:   # run_tuning's "no trial finished": the message says where to look
        return Outcome((), (str(error),))
    return Outcome((folder / "best.yaml",), ())
