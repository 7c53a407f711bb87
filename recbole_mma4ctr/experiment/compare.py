"""One command for the paper's comparison: every model, one split, one set of metrics.

``python run_recbole_mma4ctr.py --compare --models=all|feature_fair|A,B --dataset=wechat [--marks=10,20,30,50 |
--train_to=plateau] [--seeds=2024,7,11] [--protocol=honest|paper|challenge] [--challenge_round=2] [--cpus_per_run=1]
[--gpus_per_run=0.5] [--ray_address=HOST:PORT] [--max_failures=2]``

Two ways to train the cells: the paper's (every model ``max(marks)`` epochs, tested after each
mark) or ``--train_to=plateau`` (every model until its validation metric stops improving:
``plateau_patience`` validations without a better score, at most ``plateau_step_budget``
optimizer steps, with the batch size lowered so an epoch has at least
``plateau_min_steps_per_epoch`` steps; ``run._plateau_settings``). A sample's 31 steps an epoch
at batch 8192 would otherwise rank models by who learns fastest in a few dozen steps; the table
then states, per model, the steps taken and whether it stopped on the plateau or on the budget.

Every (model, seed) is one cell (``run.run_cell``), scheduled by the engine on Ray: a local
127.0.0.1 cluster by default, or a cluster you name. The driver prepares the data once; cells
run in parallel as resources allow; each cell's record and predictions come back through Ray
into ``<results_dir>/compare-<dataset>-<protocol>/``, then ``comparison.{md,csv,json}`` and
plots are made from those records (under ``--protocol=challenge`` a cell per action and the
challenge's score, ``challenge.py``). A rerun with the same settings skips cells whose record
has the same resume key (content of the settings, data and code; never file names or the
GPU), so an interrupted comparison resumes; failed cells are tried again. The command exits 1
when any cell failed, naming them.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..cells import CellError, is_challenge, layered_settings, make_cell
from ..report.comparison import write_comparison
from ..run import say
from ..settings import command_options, properties_dir, read_yaml
from . import challenge, engine

DEFAULT_MARKS = command_options("compare")["marks"]   # properties/commands.yaml
MODEL_SETS = "model_sets.yaml"


def model_sets() -> dict[str, list[str]]:
    """The named model sets of ``properties/model_sets.yaml`` (``all``, ``feature_fair``)."""
    return {str(name): [str(m) for m in models] for name, models in read_yaml(properties_dir() / MODEL_SETS).items()}


def split_list(value) -> list:
    """A comma-separated command-line value, or a list as a settings file writes it, as its items."""
    return list(value) if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")


def parse_models(text: str) -> list[str]:
    """``--models=``: a set's name (``properties/model_sets.yaml``) or a comma-separated list."""
    sets = model_sets()
    if text.strip() in sets:
        return list(sets[text.strip()])
    models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise CellError(f"--models needs a set ({', '.join(sets)}) or a comma-separated list, e.g. MMa4CTR,DIN")
    if len(set(models)) != len(models):
        raise CellError(f"--models names a model twice: {text!r}")
    return models


def parse_marks(text) -> list[int]:
    """``10,20`` (or a list; None: properties' default marks) -> sorted distinct positive epochs."""
    text = DEFAULT_MARKS if text is None else text
    try:
        marks = sorted({int(m) for m in split_list(text) if m})
    except ValueError:
        raise CellError(f"--marks needs positive epoch numbers, e.g. 10,20,30,50; got {text!r}") from None
    if not marks or marks[0] < 1:
        raise CellError(f"--marks needs positive epoch numbers, e.g. 10,20,30,50; got {text!r}")
    return marks


def parse_seeds(text) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in split_list(text) if s]
    except ValueError:
        raise CellError(f"--seeds needs whole numbers, e.g. 2024,7,11; got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CellError(f"--seeds needs distinct whole numbers, e.g. 2024,7,11; got {text!r}")
    return seeds


def comparison_marks(cell: dict, marks) -> list[int]:
    """The epoch marks of a comparison: ``[]`` when the user's layers (of a planned ``cell``) set
    ``train_to: plateau`` (``--marks`` is then refused: the two modes train differently), else
    ``--marks`` or the paper's 10, 20, 30, 50."""
    if str(layered_settings(cell).get("train_to", "epochs")).lower() == "plateau":
        if marks:
            raise CellError("--marks trains every model for fixed epochs and --train_to=plateau each to its own "
                            "validation plateau: give one of them")
        return []
    return list(marks) if isinstance(marks, list) else parse_marks(marks)


def plan_cells(models, dataset, marks, protocol, config_files, overrides, seeds) -> list[dict]:
    """One cell per (model, seed); names are the model, or ``<model>-seed<k>`` with --seeds. Under a
    challenge protocol (``challenge.py``) one cell per (model, seed, action) instead, named
    ``<model>-<action>`` or ``<model>-seed<k>-<action>``, each with that action as its label; a
    multi-task model keeps one cell per (model, seed) that scores every action."""

    per_action = is_challenge(protocol)
    cells = []
    for model in models:
        for seed in seeds or [None]:
            settings = dict(overrides) if seed is None else {**overrides, "seed": seed}
            name = model if seed is None else f"{model}-seed{seed}"
            variants = challenge.action_variants(model, dataset, protocol, config_files, settings) if per_action \
                else [("", settings, {})]
            for suffix, cell_settings, extra in variants:
                cells.append(make_cell(model, dataset, config_files, cell_settings, marks=marks, kind="compare",
                                       protocol=protocol, name=name + suffix, extra={"seed_of_cell": seed, **extra},
                                       prepare=False))
    return cells


def run_comparison(models, dataset: str, marks=None, protocol: str = "honest", config_files=None, overrides=None,
                   seeds=None, options=None) -> tuple[Path, list[str]]:
    """Run every cell not finished earlier, then write the tables; returns (folder, failed cells)."""

    engine_options = engine.parse_options(options)
    engine.check_local_resources(engine_options)
    cells = plan_cells(models, dataset, None, protocol, config_files, dict(overrides or {}), seeds)
    marks = comparison_marks(cells[0], marks)
    for cell in cells:
        cell["marks"] = marks or None
    config, folder, done = engine.prepare_grid(cells, f"compare-{dataset}-{protocol}")
    try:
        return compare_in(folder, config, cells, done, marks, protocol, engine_options)
    finally:
        engine.release_folder(folder)


def compare_in(folder: Path, config, cells: list[dict], done: dict, marks, protocol: str, engine_options):
    """Run the cells ``done`` does not answer, write the tables into ``folder``; returns (folder,
    failed cells)."""

    pending = [cell for cell in cells if cell["key"] not in done]
    for index, cell in enumerate(cells, 1):
        if cell["key"] in done:
            say(f"[compare {index}/{len(cells)}] {cell['cell']}: finished earlier with the same settings, skipped")
    started = time.time()
    if pending:
        plan = f"{max(marks)} epochs each, tested at {marks}" if marks else "each to its validation plateau"
        say(f"[compare] {len(pending)} cell(s) to run: {', '.join(c['cell'] for c in pending)}; {plan}")
        records = engine.run_cells("compare", pending, config, folder, engine_options)
        done.update(records)
    outcomes = [(cell, done.get(cell["key"])) for cell in cells]
    table = write_comparison(folder, outcomes, marks, protocol)
    say(table)
    failed = [cell["cell"] for cell, record in outcomes if record is None or record["status"] != "ok"]
    for cell, record in outcomes:
        if record is not None and record["status"] != "ok":
            say(f"[compare] {cell['cell']} FAILED: {record.get('error')}")
    say(f"[compare] {len(cells)} cell(s), {len(failed)} failed; {time.time() - started:.0f} s")
    return folder, failed
