"""The paper's sensitivity and ablation studies, one command each, run through Ray.

``python run_recbole_mma4ctr.py --study=<name> --dataset=wechat [--grid=a,b] [--marks=10,30]``

A study (``properties/studies/<name>.yaml``, or a path to such a file) is a grid over one
setting; every grid point trains max(marks) epochs and tests after every epoch. Studies: ``epochs`` (4.x.1), ``learning_rate`` (4.x.2), ``batch_size`` (4.x.3),
``fusion`` (5.x.1-5.x.4, eleven variants), ``profile_length`` (5.x.5), ``lr_schedule`` (5.x.6,
validation interrupt and learning-rate halving with and without); and ``missing_modality``
(not the paper's: ``parameter: model``, ``--models=`` chooses them; each trained model is scored
again with a modality's vectors replaced, as its ``evaluate:`` block says: ``robustness.py``,
table and plot by ``robustness_table.py``).

Every grid point is a cell (``run.run_cell``) scheduled by ``engine.py`` like comparison cells
(``--cpus_per_run``, ``--gpus_per_run``, ``--ray_address``, ``--max_failures``, ``--ray_tmp``).

Cut-downs: ``--grid=0.001,0.0001`` keeps those values (any value the setting takes, not only the
file's), ``--marks=1,2`` tests at those epochs (and trains max of them). In the ``epochs`` study
the grid is the marks: one run, tested at every mark. Any other ``--key=value`` is a RecBole
setting for every point (``--model=`` picks another model than the file's).

A point may change a data setting (one that decides the atomic files, e.g. a study over
``text_recipe``): each point then trains on data converted with its own value, in
``<data_path>/<key>-<value>/`` (``engine.split_data_variants``), and its record's ``data`` names
the settings and fingerprint of what it read.

A study file holds: ``title``, ``paper_section``, ``model``, ``parameter``, ``grid``, ``marks``,
``settings`` (fixed for every point), optional ``points`` (named points: label -> settings, as
``lr_schedule`` uses), ``xscale`` (``log``, ``linear`` or ``category``, for the plot),
``paper_columns`` and ``paper`` (the paper's test AUCs on the real data, per dataset and grid
value, shown next to ours for reference), and optional ``evaluate`` (the missing-modality
evaluation every point runs after training, ``robustness.py``).

Output, in ``<results_dir>/study-<name>-<model>-<dataset>/``: one result record (and test predictions)
per grid point, ``study.md`` / ``study.csv`` / ``study.json`` (rows = the setting's values,
columns = test AUC after each mark, then the paper's, the model's input width, epochs, train
seconds and status) and ``study.png``; Ray's logs in ``ray/``. A rerun with the same settings
skips the points already done (a failed point is tried again).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..cells import make_cell
from ..data.robustness import check_reads_modalities
from ..errors import TuneError
from ..files import write_text
from ..report import tables
from ..report.robustness import write_robustness
from ..run import Outcome, say
from ..settings import command_options, properties_dir
from . import engine

REQUIRED = ("parameter", "grid")
# what a study file may hold (the module docstring says what each is)
STUDY_KEYS = ("title", "paper_section", "model", "parameter", "grid", "marks", "settings", "points", "xscale",
              "paper_columns", "paper", "evaluate")


def available_studies() -> list[str]:
    return sorted(path.stem for path in (properties_dir() / "studies").glob("*.yaml"))


def load_study(name: str) -> dict:
    """The study file for ``name`` (a name in properties/studies/ or a path to a YAML file)."""
    import yaml

    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = properties_dir() / "studies" / f"{name}.yaml"
    if not path.exists():
        raise TuneError(f"no study {name!r}; studies: {', '.join(available_studies())} (or a path to a study YAML file)")
    study = yaml.safe_load(path.read_text()) or {}
    missing = [key for key in REQUIRED if key not in study]
    if missing:
        raise TuneError(f"{path}: missing {', '.join(missing)}")
    study.setdefault("title", study["parameter"])
    study["name"] = path.stem
    study["path"] = str(path)
    return study


def study_model(study: dict, given=None) -> str:
    """The model a study trains: ``--model=`` where given, else the study file's, else a run's default."""
    return given or study.get("model") or command_options("run")["model"]


def parse_value(text: str):
    """A --grid value: 64 -> int, 0.001 and 1e-4 -> float, true -> bool, vt_cross -> str."""
    import yaml

    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    value = yaml.safe_load(text)
    return value if isinstance(value, (int, float, str, bool)) else text


def label_of(value) -> str:
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


def same_value(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return str(a) == str(b)


def study_plan(study: dict, grid_text, marks_text) -> tuple[list, list[int]]:
    """(grid values, marks) after the command line's cut-downs."""
    grid = list(study["grid"])
    if grid_text:
        grid = [parse_value(part.strip()) for part in str(grid_text).split(",") if part.strip()]
        if not grid:
            raise TuneError("--grid needs comma-separated values, e.g. --grid=0.001,0.0001")
    points = study.get("points") or {}
    unknown = [label_of(v) for v in grid if points and label_of(v) not in points]
    if unknown:
        raise TuneError(f"study {study['name']} has the points {', '.join(points)}; not {', '.join(unknown)}")
    if study["parameter"] == "epochs":
        chosen = marks_text or (grid_text and ",".join(str(v) for v in grid)) or ",".join(str(v) for v in study["grid"])
        return ["epochs"], _marks(chosen)
    marks = _marks(marks_text) if marks_text else sorted({int(m) for m in study.get("marks") or [10]})
    return grid, marks


def _marks(text) -> list[int]:
    try:
        marks = sorted({int(m) for m in str(text).replace(" ", "").split(",") if m})
    except ValueError:
        raise TuneError(f"--marks and the epochs study's --grid take whole epoch numbers, e.g. 1,2; got {text!r}") from None
    if not marks or marks[0] < 1:
        raise TuneError(f"marks must be positive epoch numbers, got {text!r}")
    return marks


def point_settings(study: dict, value) -> dict:
    """The RecBole settings one grid point adds to the study's fixed settings."""
    if study["parameter"] in ("epochs", "model"):
        return {}
    points = study.get("points") or {}
    if points:
        return dict(points[label_of(value)])
    return {study["parameter"]: value}


def paper_values(study: dict, dataset: str, value) -> list:
    table = (study.get("paper") or {}).get(dataset) or {}
    for key, values in table.items():
        if same_value(key, value):
            return list(values)
    return []


# ---- the study ---------------------------------------------------------------------------------------
def run_study(name: str, dataset: str, config_files=None, marks=None, overrides=None, options=None,
              protocol=None) -> Path:
    """Run (or resume) one study; returns its results folder."""
    options = dict(options or {})
    engine_options = engine.parse_options({k: options.pop(k) for k in list(options) if k in engine.ENGINE_OPTIONS})
    overrides = dict(overrides or {})
    study = load_study(name)
    by_model = study["parameter"] == "model"
    if by_model and options.get("model"):
        raise TuneError(f"the {study['name']} study varies the model: choose them with --models=A,B")
    grid, marks = study_plan(study, options.get("models") if by_model else options.get("grid"), marks)
    model = study_model(study, options.get("model"))
    if study["parameter"] not in ("epochs", "lr_schedule") and study["parameter"] in overrides:
        raise TuneError(f"--{study['parameter']} is what the {study['name']} study varies; use --grid= to choose its values")
    engine.check_local_resources(engine_options)
    fixed = {**(study.get("settings") or {}), **overrides}
    cells = [make_cell(value if by_model else model, dataset, config_files, {**fixed, **point_settings(study, value)},
                       marks=marks, kind="study", protocol=protocol, name=label_of(value), prepare=False,
                       extra={"study": study["name"], "point": label_of(value)}) for value in grid]
    for cell in cells:
        if study.get("evaluate"):
            check_reads_modalities(cell["model"], study["name"])
            cell["robustness"] = dict(study["evaluate"])
    folder_name = f"study-{study['name']}-{dataset}" if by_model else f"study-{study['name']}-{model}-{dataset}"
    config, folder, done = engine.prepare_grid(cells, folder_name)
    try:
        return study_in(folder, config, study, cells, grid, done, marks, model, dataset, engine_options)
    finally:
        engine.release_folder(folder)


def study_in(folder: Path, config, study: dict, cells: list[dict], grid: list, done: dict, marks, model: str,
             dataset: str, engine_options) -> Path:
    """Run the points ``done`` does not answer, write the table and plot into ``folder``."""

    pending = [cell for cell in cells if cell["key"] not in done]
    say(f"[study] {study['title']} ({study['name']}, paper {study.get('paper_section', '?')}): {model} on {dataset}, "
        f"{len(cells)} point(s) {[c['cell'] for c in cells]}, test AUC at epochs {marks}; {len(cells) - len(pending)} "
        f"done earlier, {len(pending)} to run")
    started = time.time()
    if pending:
        records = engine.run_cells("study", pending, config, folder, engine_options)
        done.update(records)
    points = {cell["cell"]: (value, done.get(cell["key"])) for cell, value in zip(cells, grid)}
    rows = study_rows(study, points, marks, dataset)
    if study.get("evaluate"):
        table = write_robustness(folder, study, [record for _, record in points.values()], dataset)
    else:
        table = write_study(folder, study, rows, marks, model, dataset)
    say(table)
    failed = [row["label"] for row in rows if row["status"] != "ok"]
    say(f"[study] {len(points)} run(s), {len(failed)} failed{' ' + str(failed) if failed else ''}; "
        f"{time.time() - started:.0f} s")
    if len(failed) == len(rows):
        raise RuntimeError(f"every point of the study failed; see {folder / 'study.md'} and the records in {folder}")
    return folder


# ---- table and plot ------------------------------------------------------------------------------------
def study_rows(study, points, marks, dataset: str) -> list[dict]:
    """One row per grid point (the epochs study: one row per mark), from the records only;
    ``points``: label -> (value, record or None)."""
    rows = []
    for label, (value, record) in points.items():
        record = record or {"status": "not run"}
        ok = record.get("status") == "ok"
        by_epoch = {entry["epoch"]: entry for entry in record.get("test_by_epoch") or []} if ok else {}
        dims = ((record.get("features") or {}).get("input_dims") or {}) if ok else {}
        base = {"input_width": sum(dims.values()) if dims else None, "epochs_run": record.get("epochs_run"),
                "train_seconds": record.get("train_seconds"), "status": record.get("status"),
                "error": record.get("error") or "", "record": record.get("record_path"),
                "curve": [(e["epoch"], e.get("auc")) for e in record.get("test_by_epoch") or []],
                "valid_curve": [(h["epoch"] + 1, (h.get("valid") or {}).get("auc")) for h in record.get("history") or []
                                if not h.get("interrupted")]}
        if study["parameter"] == "epochs":
            for mark in marks:
                entry = by_epoch.get(mark, {})
                rows.append({"label": str(mark), "value": mark, **base, "auc": entry.get("auc"), "gauc": entry.get("gauc"),
                             "logloss": entry.get("logloss"), "paper": paper_values(study, dataset, mark)})
            continue
        row = {"label": label, "value": value, **base, "paper": paper_values(study, dataset, value)}
        for mark in marks:
            entry = by_epoch.get(mark, {})
            for metric in ("auc", "gauc", "logloss"):
                row[f"{metric}@{mark}"] = entry.get(metric)
        rows.append(row)
    return rows


def write_study(folder: Path, study, rows, marks, model: str, dataset: str) -> str:
    import json

    parameter = study["parameter"]
    paper_columns = list(study.get("paper_columns") or [])
    with_paper = any(row["paper"] for row in rows)
    for row in rows:
        for index, column in enumerate(paper_columns):
            row[f"paper {column}"] = row["paper"][index] if index < len(row["paper"]) else None
    if parameter == "epochs":
        metric_columns, headers = ["auc"], ["epoch", "test AUC"]
        tail = []
    else:
        metric_columns = [f"auc@{m}" for m in marks]
        headers = [parameter] + [f"AUC@{m}" for m in marks]
        tail = ["input_width", "epochs_run", "train_seconds", "status"]
    paper_keys = [f"paper {c}" for c in paper_columns] if with_paper else []
    columns = ["label"] + metric_columns + paper_keys + tail
    headers = headers + [f"paper {c} ({dataset}, real data)" for c in paper_columns if with_paper] \
        + ["input width", "epochs", "train s", "status"][:len(tail)]
    shown = [{**row, "status": row["status"] if row["status"] == "ok" else f"{row['status']}: {row['error']}",
              "train_seconds": None if row["train_seconds"] is None else round(float(row["train_seconds"]), 1)}
             for row in rows]
    table = tables.markdown(headers, tables.cells_of(shown, columns, decimals=set(metric_columns + paper_keys)))
    notes = [f"# {study['title']}: {model} on {dataset}",
             f"Paper section {study.get('paper_section', '?')}. Test AUC on the test split with the weights after "
             f"the given epoch (a run trains {max(marks)} epochs and is tested after every one).",
             table]
    if with_paper:
        notes.append(f"The paper's columns are the authors' numbers on the real {dataset} data, printed for "
                     "reference; a generated sample has a different ceiling.")
    if parameter == "epochs" and rows and rows[0]["status"] != "ok":
        notes.append(f"status: {rows[0]['status']} {rows[0]['error']}")
    write_text(folder / "study.md", "\n\n".join(notes) + "\n")
    plain_rows = [{k: v for k, v in row.items() if k not in ("paper", "curve", "valid_curve")} for row in rows]
    tables.write_csv(folder / "study.csv", plain_rows)
    write_text(folder / "study.json", json.dumps({"study": study["name"], "title": study["title"], "model": model,
                                                   "dataset": dataset, "parameter": parameter, "marks": marks,
                                                   "rows": plain_rows}, indent=2, default=str))
    plot_study(folder, study, rows, marks, model, dataset)
    return table


def plot_study(folder: Path, study, rows, marks, model: str, dataset: str) -> None:
    """study.png: test AUC against the setting (one line per mark) and test AUC after every epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    parameter = study["parameter"]
    ok = [row for row in rows if row["status"] == "ok"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    if parameter == "epochs":
        left.plot([r["value"] for r in ok], [r["auc"] for r in ok], marker="o", label="test AUC (this run)")
        paper = [(r["value"], r["paper"][0]) for r in rows if r["paper"]]
        if paper:
            left.plot(*zip(*paper), marker="s", linestyle="--", color="grey", label=f"paper, real {dataset}")
        left.set_xlabel("epochs trained")
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        curves = [("test AUC", ok[0]["curve"]), ("valid AUC", ok[0]["valid_curve"])] if ok else []
    else:
        category = study.get("xscale") == "category" or any(isinstance(r["value"], str) for r in rows)
        positions = {r["label"]: (index if category else r["value"]) for index, r in enumerate(rows)}
        width = 0.8 / len(marks)
        for index, mark in enumerate(marks):
            points = [(positions[r["label"]], r[f"auc@{mark}"]) for r in ok if r.get(f"auc@{mark}") is not None]
            if points and category:   # categories: grouped bars, one bar a mark
                xs, ys = zip(*points)
                left.bar([x + (index - (len(marks) - 1) / 2) * width for x in xs], ys, width=width,
                         label=f"test AUC after epoch {mark}")
            elif points:
                left.plot(*zip(*points), marker="o", label=f"test AUC after epoch {mark}")
        if category and left.patches:
            values = [patch.get_height() for patch in left.patches]
            left.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.03))
        if category:
            left.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=45, ha="right")
        else:
            if study.get("xscale") == "log" and all(isinstance(r["value"], (int, float)) and r["value"] > 0 for r in rows):
                left.set_xscale("log")
            left.set_xticks([r["value"] for r in rows], [r["label"] for r in rows], rotation=45 if len(rows) > 6 else 0)
            left.minorticks_off()
        left.set_xlabel(parameter)
        curves = [(r["label"], r["curve"]) for r in ok]
    left.set_ylabel("test AUC")
    left.set_title(f"{study['title']} ({model}, {dataset})")
    left.grid(alpha=0.3)
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)
    for label, curve in curves:
        points = [(e, a) for e, a in curve if a is not None]
        if points:
            right.plot(*zip(*points), marker="o", markersize=3, label=label)
    right.set(xlabel="epoch", ylabel="AUC" if parameter == "epochs" else "test AUC",
              title="Test and validation AUC after every epoch" if parameter == "epochs" else "Test AUC after every epoch")
    epochs = sorted({e for _, curve in curves for e, _ in curve})
    if 0 < len(epochs) <= 20:
        right.set_xticks(epochs)
    else:
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.grid(alpha=0.3)
    if curves:
        right.legend(fontsize=8, ncol=2 if len(curves) > 6 else 1, title=parameter if parameter != "epochs" else None)
    figure.tight_layout()
    figure.savefig(folder / "study.png", dpi=110)
    plt.close(figure)


def command(name: str, dataset: str, config_files, overrides: dict, options: dict, protocol=None) -> Outcome:
    """The ``--study=`` command: ``options`` are the study and engine options the user gave; returns
    study.md, or why no point finished (the table is written either way)."""
    options = dict(options)
    marks = options.pop("marks", None)
    try:
        folder = run_study(name, dataset, config_files, marks, overrides, options, protocol)
    except RuntimeError as error:   # run_study's "every point failed": the message says where to look
        return Outcome((), (str(error),))
    return Outcome((folder / "study.md",), ())
