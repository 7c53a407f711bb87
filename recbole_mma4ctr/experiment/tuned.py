"""The tuned comparison: every model tuned on validation with the same budget, then compared.

``python run_recbole_mma4ctr.py --compare --models=MMa4CTR,DeepFM+mm,DCNV2+mm --tune_trials=8
[--marks=10 | --train_to=plateau] [--seeds=2024,7,11] [--dataset=wechat]`` (ASHA's grace period,
reduction factor and metric: the ``tune`` section of ``properties/commands.yaml``; ``--num_samples``
and ``--params_file`` are ``--tune``'s, refused)

1. Every model is tuned with ``tune.run_tuning`` (its trials are cells on Ray under ASHA, ranked
   on the validation metric only): the same number of trials (``--tune_trials``), the same epochs
   a trial (``max(--marks)``, or the ``epochs`` setting under ``--train_to=plateau``), the same
   ASHA grace period and reduction factor. Its search space is ``properties/hyper/<Model>.hyper``
   (a ``+mm`` model: its own file if there is one, else its base model's, so ``DeepFM`` and
   ``DeepFM+mm`` search the same space); a model without one is refused before anything runs.
2. The trials never score the test split (``test_after_training: false``); the best trial
   by validation, finished or stopped by ASHA (``trials.json``'s ``best``, ``tune.best_trial``),
   gives the settings.
3. Every model then runs with its chosen settings and every seed as an ordinary comparison cell
   (``compare.compare_in``): the test split is scored once per final cell.

Output, in ``<results_dir>/compare-<dataset>-<protocol>-tuned/``: the comparison's own files
(``comparison.md`` ...; each record's ``tuned`` says which settings it ran with and from which
tuning), ``tuning.md`` / ``tuning.json`` (per model: budget, search-space file, trials finished,
best validation value, the chosen settings and whether each sat on the edge of its range) and
``tuning/<model>-<key>/`` (that model's tuning folder, ``tune.py``'s files). Resumable: a model
whose tuning finished with the same settings, space, budget, data and code is not tuned again
(its folder is named by that key), and finished final cells are skipped like any comparison's.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from ..cells import make_cell, results_dir_of
from ..errors import CellError
from ..files import write_text
from ..model.feature_fair import split_name
from ..prepare.sources import ensure_dataset
from ..report import tables
from ..report.tuned_vs_default import write_tuned_vs_default
from ..resume_key import code_version, PLUMBING
from ..run import say
from ..settings import properties_dir
from . import engine
from .compare import compare_in, comparison_marks, plan_cells
from .tune import Dimension, FINISHED, read_hyper_file, run_tuning, TUNE_DEFAULTS

EDGE_SHARE = 0.1     # a continuous value within the outer tenth of its range (in its sampling scale) is on the edge


def hyper_file_of(model: str) -> Path:
    """The model's search space: ``properties/hyper/<model>.hyper``; a ``+mm`` model without its
    own file searches its base model's space. No fallback to a generic space."""
    own = properties_dir() / "hyper" / f"{model}.hyper"
    base, mm = split_name(model)
    if own.is_file():
        return own
    shared = properties_dir() / "hyper" / f"{base}.hyper"
    if mm and shared.is_file():
        return shared
    raise CellError(f"--tune_trials: {model} has no search space {own}: the tuned comparison tunes every model in "
                    f"its own space (learning rate, batch size, embedding size, regularisation, its own sizes)")


def tuning_budget(trials, epochs: int, options: dict) -> dict:
    """The budget every model is tuned with: trials, epochs a trial, ASHA's grace period and
    reduction factor, the ranking metric (validation)."""
    try:
        count = int(trials)
    except (TypeError, ValueError):
        raise CellError(f"--tune_trials takes a whole number of trials per model, e.g. 8; got {trials!r}") from None
    if count < 1:
        raise CellError(f"--tune_trials must be at least 1; got {trials!r}")
    merged = {**TUNE_DEFAULTS, **{k: v for k, v in options.items() if k in TUNE_DEFAULTS and v is not None}}   # commands.yaml's tune section
    return {"trials": count, "epochs": int(epochs), "grace_period": str(merged["grace_period"]),
            "reduction_factor": str(merged["reduction_factor"]), "metric": merged["metric"]}


def on_edge(dimension: Dimension, value) -> str:
    """Where a chosen value sits in its dimension: ``low edge``, ``high edge``, ``inside`` or
    ``unordered``. Listed numbers (choice, grid): the smallest or largest of them; listed values
    that are not all numbers (layer lists, names) have no edge; a range: within its outer
    ``EDGE_SHARE`` (log scale for the log kinds)."""
    if dimension.kind in ("choice", "grid"):
        values = list(dimension.values)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return "unordered"
        values = sorted(values)
        if len(values) < 2 or value not in values:
            return "inside"
        index = values.index(value)
        return "low edge" if index == 0 else "high edge" if index == len(values) - 1 else "inside"
    low, high = float(dimension.values[0]), float(dimension.values[1])
    position = math.log(float(value)) if dimension.kind in ("loguniform", "qloguniform") else float(value)
    share = (position - low) / (high - low)
    return "low edge" if share <= EDGE_SHARE else "high edge" if share >= 1 - EDGE_SHARE else "inside"


def tuning_key(model: str, dataset: str, protocol, config_files, overrides: dict, params_file: Path,
               budget: dict, data_source: dict) -> str:
    """What makes two tunings of a model the same: model, dataset, protocol, the user's config
    files and settings (minus plumbing), the search space's text, the budget, the data's
    fingerprint and the code version (never a path)."""
    texts = [Path(name).read_text(encoding="utf-8") for name in (config_files.split() if isinstance(config_files, str)
                                                                  else config_files or [])]
    payload = json.dumps({"model": model, "dataset": dataset, "protocol": protocol, "config": texts,
                          "settings": {k: v for k, v in overrides.items() if k not in PLUMBING},
                          "space": params_file.read_text(encoding="utf-8"), "budget": budget, "data": data_source,
                          "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def chosen_settings(summary: dict, dimensions: list[Dimension]) -> dict:
    """The settings of the best trial by validation (``trials.json``'s ``best``, ranked by
    ``tune.py`` on the validation metric only): one value per dimension, as the trial ran it."""
    best = summary.get("best")
    if not best:
        return {}
    return {d.name: best[d.name] for d in dimensions}


def shown(value) -> str:
    """A setting's value for the table: floats to 4 significant digits, lists as JSON."""
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, list) else str(value)


def tune_model(model: str, dataset: str, protocol, config_files, overrides: dict, budget: dict, root: Path,
               engine_options: dict, data_source: dict) -> dict:
    """Tune one model (or reuse its finished tuning); returns its row of tuning.json."""
    params_file = hyper_file_of(model)
    dimensions = read_hyper_file(params_file)
    key = tuning_key(model, dataset, protocol, config_files, overrides, params_file, budget, data_source)
    results_dir = root / f"{model}-{key}"
    row = {"model": model, "params_file": str(params_file), "budget": budget, "key": key,
           "folder": str(results_dir)}
    found = sorted(results_dir.glob("tune-*/trials.json"))
    if found and json.loads(found[0].read_text()).get("best"):
        say(f"[tuned] {model}: tuned earlier with the same settings, space and budget; reused ({found[0].parent})")
    else:
        settings = {**overrides, "epochs": budget["epochs"], "results_dir": str(results_dir),
                    "test_after_training": False}      # the trials never score the test split
        options = {"num_samples": budget["trials"], "params_file": str(params_file), "grace_period": budget["grace_period"],
                   "reduction_factor": budget["reduction_factor"], "metric": budget["metric"], **engine_options}
        try:
            run_tuning(model, dataset, config_files, settings, options, protocol)
        except RuntimeError as error:
            return {**row, "status": "failed", "error": str(error), "chosen": {}}
        found = sorted(results_dir.glob("tune-*/trials.json"))
    summary = json.loads(found[0].read_text())
    chosen = chosen_settings(summary, dimensions)
    best = summary["best"]
    finished = [t for t in summary["trials"] if t.get("status") in FINISHED]
    return {**row, "status": "ok", "metric": summary["metric"], "trials_run": len(summary["trials"]),
            "trials_finished": len(finished), "best_valid": best.get(f"best_{summary['metric']}"),
            "best_epoch": best.get("best_epoch"), "best_trial": best.get("trial"), "best_status": best.get("status"),
            "chosen": chosen,
            "edges": {d.name: on_edge(d, chosen[d.name]) for d in dimensions}}


def run_tuned_comparison(models, dataset: str, trials, marks=None, protocol: str = "honest", config_files=None,
                         overrides=None, seeds=None, options=None) -> tuple[Path, list[str]]:
    """Tune every model with the same budget, then run the comparison with the chosen settings;
    returns (comparison folder, failed models and cells)."""

    overrides = dict(overrides or {})
    own = [key for key in ("num_samples", "params_file") if key in overrides]
    if own:
        raise CellError(f"--{own[0]} is --tune's: a tuned comparison gives every model --tune_trials trials in its "
                        f"own properties/hyper/<Model>.hyper")
    options = dict(options or {})
    engine_only = {k: options[k] for k in options if k in engine.ENGINE_OPTIONS}
    engine_options = engine.parse_options(engine_only)
    engine.check_local_resources(engine_options)
    probe = make_cell(models[0], dataset, config_files, overrides, kind="compare", protocol=protocol, prepare=False)
    marks = comparison_marks(probe, marks)
    config = engine.driver_config(probe)
    data_source = {"fingerprint": (ensure_dataset(config) or {}).get("fingerprint")}   # prepared once, here
    budget = tuning_budget(trials, max(marks) if marks else int(config["epochs"]), options)
    files = [hyper_file_of(model) for model in models]           # every space exists before anything runs
    folder = Path(results_dir_of(probe)).resolve() / f"compare-{dataset}-{protocol}-tuned"
    say(f"[tuned] {len(models)} model(s), each tuned with {budget['trials']} trial(s) of up to {budget['epochs']} "
        f"epoch(s) on validation (ASHA grace {budget['grace_period']}, reduction {budget['reduction_factor']}); spaces: "
        + ", ".join(f"{m} <- {f.name}" for m, f in zip(models, files)))
    rows = [tune_model(model, dataset, protocol, config_files, overrides, budget, folder / "tuning", engine_only,
                       data_source) for model in models]
    write_tuning_table(folder, rows, dataset)
    tuned = [row for row in rows if row["status"] == "ok"]
    cells = []
    for row in tuned:
        for cell in plan_cells([row["model"]], dataset, None, protocol, config_files,
                               {**overrides, **row["chosen"]}, seeds):
            cell["marks"] = marks or None
            cell["extra"]["tuned"] = {"settings": row["chosen"], "tuning": row["folder"], "budget": budget,
                                      "best_valid": row["best_valid"], "metric": row["metric"]}
            cells.append(cell)
    failed = [f"{row['model']} (tuning: {row['error']})" for row in rows if row["status"] != "ok"]
    if not cells:
        return folder, failed
    config, folder_used, done = engine.prepare_grid(cells, folder.name)
    try:
        _, failed_cells = compare_in(folder_used, config, cells, done, marks, protocol, engine_options)
    finally:
        engine.release_folder(folder_used)
    default_folder = folder.parent / f"compare-{dataset}-{protocol}"
    against = write_tuned_vs_default(folder_used, default_folder)
    say(f"[tuned] tuned against default settings ({folder_used.name}/tuned_vs_default.md):\n{against}" if against else
        f"[tuned] no default cells in {default_folder}: the same --compare without --tune_trials (same models, seeds "
        f"and marks) there adds tuned_vs_default.md on the next tuned run")
    return folder_used, failed + failed_cells


def write_tuning_table(folder: Path, rows: list[dict], dataset: str) -> str:
    """tuning.md / tuning.json: each model's budget, space, best validation and chosen settings."""
    lines = []
    for row in rows:
        budget = row["budget"]
        settings = ", ".join(f"{k}={shown(v)}" + (f" ({row['edges'][k]})" if row["edges"][k].endswith("edge") else "")
                             for k, v in row["chosen"].items()) if row["status"] == "ok" else row.get("error", "")
        lines.append({"model": row["model"], "space": Path(row["params_file"]).name,
                      "budget": f"{budget['trials']} trials x <= {budget['epochs']} epochs (ASHA grace "
                                f"{budget['grace_period']})",
                      "finished": f"{row.get('trials_finished', 0)}/{row.get('trials_run', 0)}",
                      "best_valid": row.get("best_valid"), "best_status": row.get("best_status", ""), "chosen": settings,
                      "edge": ", ".join(k for k, v in (row.get("edges") or {}).items() if v.endswith("edge")) or "none"})
    metric = next((row["metric"] for row in rows if row.get("metric")), "valid metric")
    table = tables.markdown(["model", "search space", "budget (same for every model)", "trials finished",
                             f"best valid {metric}", "best trial's status", "chosen settings (edge of the range)", "on an edge"],
                            tables.cells_of(lines, ["model", "space", "budget", "finished", "best_valid", "best_status",
                                                    "chosen", "edge"],
                                            decimals={"best_valid"}))
    text = (f"# Tuning of the tuned comparison on {dataset}\n\nEvery model tuned on the validation split with the "
            f"same budget; the best trial by validation (finished, or stopped by ASHA at its best epoch) gives the "
            f"settings every seed then runs with. The tuning "
            f"never reads the test split. A setting on an edge of its range: the best point may lie beyond it.\n\n"
            + table + "\n")
    write_text(folder / "tuning.md", text)
    write_text(folder / "tuning.json", json.dumps({"dataset": dataset, "models": rows}, indent=2, default=str))
    say(table)
    return table
