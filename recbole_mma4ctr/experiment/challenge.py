"""The challenges' own protocols: one run per scored action, scored the way the challenge scored it.

``--protocol=challenge`` (properties/protocol/challenge.yaml, the one home of the actions, weights
and per-dataset settings) turns each (model, seed) of a comparison into one cell per action of
the challenge's round, each trained with that action as its label (the converter's
``label_action``) on atomic files of its own (``<data_path>/<action>``), so actions never
overwrite one another. After the runs, :func:`score_outcomes` reads each action's record and
saved test predictions and gives, per (model, seed), the action's metric, the users it dropped
and the challenge score (``stats.challenge_score``):

- WeChat Big Data Challenge 2021: uAUC per action (users with one class dropped), weighted
  4/3/2/1 over read_comment, like, click_avatar, forward (round 1) or 4/3/2/1/1/1/1 adding
  favorite, comment, follow (round 2, ``--challenge_round=2``), on the official baseline's day
  split (train days 1-12, valid 13, test 14; ``paper_split.day_cut_points``);
- TikTok ICME 2019 track 1: 0.7 * AUC(finish) + 0.3 * AUC(like), global AUC, on the honest
  chronological split (the challenge's own split is not known here).

Cells stay plain data: this module only says which settings, names and extras each action's
cell gets (:func:`action_variants`); ``compare.plan_cells`` makes them and ``report/comparison.py`` calls
:func:`comparison_part` for the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cells import TASKS_KEY, protocol_settings, read_config_texts
from ..config import typed_value
from ..errors import ChallengeError
from ..report import tables
from ..record import read_predictions
from ..settings import read_yaml
from ..stats import challenge_score, uauc_users, weighted_auc

LABEL_SETTING = "label_action"      # both converters' label choice (properties/dataset/*.yaml)
METRICS = ("uauc", "auc")


@dataclass(frozen=True)
class Task:
    """What one challenge scores on one dataset: the round's actions and weights, the metric, and
    the protocol settings the dataset's cells get."""
    dataset: str
    round: int
    metric: str
    weights: dict
    settings: dict

    def describe(self) -> dict:
        """Plain data for cells and records (``record['challenge']``)."""
        return {"dataset": self.dataset, "round": self.round, "metric": self.metric, "weights": dict(self.weights)}


def task_of(dataset: str, layers: dict, source: str = "properties/protocol/challenge.yaml") -> Task:
    """The task of ``dataset`` from merged settings (protocol file, then the user's layers)."""
    tasks = layers.get(TASKS_KEY) or {}
    if dataset not in tasks:
        raise ChallengeError(f"--protocol=challenge has no task for dataset {dataset!r} ({source} knows "
                             f"{', '.join(sorted(tasks)) or 'none'})")
    spec = tasks[dataset] or {}
    rounds = spec.get("rounds") or []
    try:
        number = int(typed_value(layers.get("challenge_round", 1)))
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= len(rounds):
        raise ChallengeError(f"--challenge_round={layers.get('challenge_round')!r}: {dataset} has round(s) "
                             f"{', '.join(str(r) for r in range(1, len(rounds) + 1))} ({source})")
    weights = {str(action): float(weight) for action, weight in (rounds[number - 1] or {}).items()}
    metric = spec.get("metric")
    if metric not in METRICS or not weights or any(w <= 0 for w in weights.values()):
        raise ChallengeError(f"{source}: {TASKS_KEY}.{dataset} needs metric (one of {', '.join(METRICS)}) and rounds "
                             f"mapping each action to a positive weight")
    return Task(dataset, number, metric, weights, dict(spec.get("settings") or {}))


def _user_layers(config_files, settings: dict) -> tuple[dict, dict]:
    """(the user's config files merged, the command-line settings typed): the layers above the protocol."""
    files = {}
    for name, _ in read_config_texts(config_files):
        files.update(read_yaml(name))
    return files, {str(k): typed_value(v) for k, v in (settings or {}).items()}


def action_variants(dataset: str, protocol: str, config_files, settings: dict) -> list[tuple[str, dict, dict]]:
    """One ``(name suffix, settings, extra)`` per action of the challenge's round for a cell
    with ``settings``: the dataset's protocol settings (where the user's layers do not set
    them), the user's settings, then the action as the label and its own data folder."""
    base = protocol_settings(protocol)
    files, typed = _user_layers(config_files, settings)
    layers = {**base, **files, **typed}
    if LABEL_SETTING in files or LABEL_SETTING in typed:
        raise ChallengeError(f"--{LABEL_SETTING} is set per action by --protocol={protocol} (each action is one run); "
                             f"leave it out")
    task = task_of(dataset, layers, f"properties/protocol/{protocol}.yaml")
    defaults = {k: v for k, v in task.settings.items() if k not in files and k not in typed}
    root = str(layers.get("data_path") or "").rstrip("/")
    if not root:
        raise ChallengeError(f"properties/protocol/{protocol}.yaml: setting 'data_path' is missing (each action's "
                             f"atomic files go in <data_path>/<action>)")
    variants = []
    for action in task.weights:
        variants.append((f"-{action}", {**defaults, **typed, LABEL_SETTING: action, "data_path": f"{root}/{action}"},
                         {"challenge_action": action, "challenge": task.describe()}))
    return variants


# ---- the score of a set of records ------------------------------------------------------------------
def action_metric(metric: str, predictions: dict) -> dict:
    """One action's entry from its test predictions: the metric, rows, positives and (uAUC) users."""
    import numpy as np

    scores, labels, users = predictions["score"], predictions["label"], predictions["user"]
    entry = {"rows": int(len(scores)), "positives": int((np.asarray(labels) > 0.5).sum())}
    if metric == "uauc":
        counted = uauc_users(scores, labels, users)
        entry.update(value=counted.pop("uauc"), **counted)
    else:
        value = weighted_auc(scores, labels)
        entry["value"] = None if np.isnan(value) else float(value)
    return entry


def score_outcomes(outcomes, oracle=None) -> dict | None:
    """The challenge part of a comparison from ``outcomes`` ((cell, record or None) in order):
    ``{"task": ..., "entries": [...]}``, one entry per (model, seed) with each action's metric
    entry (or its status) and the score; None when no cell is a challenge cell. ``oracle``
    (record, predictions) -> true probabilities or None adds an ``oracle`` entry: the score of
    the generator's true probabilities, where every action's data has them."""
    cells = [(cell, record) for cell, record in outcomes if (cell.get("extra") or {}).get("challenge_action")]
    if not cells:
        return None
    task = dict(cells[0][0]["extra"]["challenge"])
    entries: dict = {}
    oracle_actions: dict = {}
    for cell, record in cells:
        extra = cell["extra"]
        action = extra["challenge_action"]
        name = cell["cell"][: -len(action) - 1] if cell["cell"].endswith(f"-{action}") else cell["cell"]
        entry = entries.setdefault(name, {"model": name, "seed": extra.get("seed_of_cell"), "actions": {}})
        if record is None or record.get("status") != "ok":
            entry["actions"][action] = {"cell": cell["cell"], "status": record.get("status") if record else "not run"}
            continue
        predictions = read_predictions(record)
        if predictions is None:
            entry["actions"][action] = {"cell": cell["cell"], "status": "no predictions"}
            continue
        entry["actions"][action] = {"cell": cell["cell"], "status": "ok", "run_id": record.get("run_id"),
                                    **action_metric(task["metric"], predictions)}
        if oracle is not None and action not in oracle_actions:
            probabilities = oracle(record, predictions)
            if probabilities is not None:
                oracle_actions[action] = action_metric(task["metric"], {**predictions, "score": probabilities})
    result = list(entries.values())
    for entry in result:
        entry["score"] = challenge_score({a: (e.get("value") if e.get("status") == "ok" else None)
                                          for a, e in entry["actions"].items()}, task["weights"])
    if set(oracle_actions) == set(task["weights"]):
        result.append({"model": "oracle (true probabilities)", "seed": None, "actions": oracle_actions,
                       "score": challenge_score({a: e["value"] for a, e in oracle_actions.items()}, task["weights"])})
    return {"task": task, "formula": formula(task), "entries": result}


def formula(task: dict) -> str:
    """The score's formula in words, e.g. (4 uAUC(read_comment) + 3 uAUC(like) + ...) / 10."""
    name = "uAUC" if task["metric"] == "uauc" else "AUC"
    total = sum(task["weights"].values())
    terms = " + ".join(f"{_weight(w)} {name}({a})" for a, w in task["weights"].items())
    return f"({terms}) / {_weight(total)}" if abs(total - 1) > 1e-12 else terms


def _weight(value: float) -> str:
    return f"{value:g}"


def row_columns(part: dict) -> dict:
    """Columns for the comparison's per-cell rows (csv and json): the cell's action, its metric,
    the users it dropped, and the challenge score of its (model, seed)."""
    metric = part["task"]["metric"]
    columns = {}
    for entry in part["entries"]:
        for action, values in entry["actions"].items():
            if "cell" in values:
                columns[values["cell"]] = {"challenge_action": action, f"challenge_{metric}": values.get("value"),
                                           "challenge_users_dropped": values.get("users_dropped"),
                                           "challenge_score": entry["score"]}
    return columns


def challenge_cells(part: dict) -> tuple[list[str], list[list[str]]]:
    """The challenge table (header, cell texts): per (model, seed) each action's metric (users
    dropped) and the score."""
    task = part["task"]
    name = "uAUC" if task["metric"] == "uauc" else "AUC"
    actions = list(task["weights"])
    header = ["model", "seed"] + [f"{a} {name} (w {_weight(task['weights'][a])})" for a in actions] + ["score"]
    lines = []
    for entry in part["entries"]:
        cells = [entry["model"], "-" if entry["seed"] is None else str(entry["seed"])]
        for action in actions:
            values = entry["actions"].get(action) or {"status": "not run"}
            if values.get("status", "ok") != "ok":
                cells.append(values["status"])
            elif values.get("value") is None:
                cells.append("-")
            else:
                dropped = f" ({values['users_dropped']:,} of {values['users']:,} users dropped)" if "users" in values else ""
                cells.append(f"{values['value']:.4f}{dropped}")
        cells.append("-" if entry["score"] is None else f"**{entry['score']:.4f}**")
        lines.append(cells)
    return header, lines


def markdown(part: dict) -> str:
    """The challenge section: the table (:func:`challenge_cells`), then mean +- sd of the score
    over seeds where a model ran several."""
    import numpy as np

    task = part["task"]
    name = "uAUC" if task["metric"] == "uauc" else "AUC"
    title = f"WeChat Big Data Challenge 2021, round {task['round']}" if task["dataset"] == "wechat" else "ICME 2019 track 1"
    sections = [f"## Challenge score ({title})",
                f"score = {part['formula']}, each action's {name} on the test split of the run trained with that "
                "action as its label" + (" (users whose test rows hold one class are dropped, as the challenge "
                                         "dropped them; their count is in brackets)" if task["metric"] == "uauc" else
                                         "; global AUC over all test rows") + ".",
                tables.markdown(*challenge_cells(part))]
    seeds: dict = {}
    for entry in part["entries"]:
        if entry["seed"] is not None and entry["score"] is not None:
            seeds.setdefault(entry["model"].rsplit("-seed", 1)[0], []).append(entry["score"])
    spread = [(model, values) for model, values in seeds.items() if len(values) > 1]
    if spread:
        sections.append("Score over seeds (mean +- sd, ddof 1): " + "; ".join(
            f"{model} {np.mean(v):.4f} +- {np.std(v, ddof=1):.4f} ({len(v)} seeds)" for model, v in spread) + ".")
    return "\n\n".join(sections)


def protocol_note(task: dict) -> str:
    """The comparison's line on how the challenge protocol's table reads (the protocol and the
    split each run used are stated from the records, ``report.protocol_lines``)."""
    return (f"Under the challenge protocol on {task['dataset']} each model ran once per action, with that action as "
            f"the label; each row of the table above is one (model, action) run.")


def comparison_part(outcomes, oracle=None) -> dict | None:
    """What ``report.write_comparison`` adds under a challenge protocol: the json part, the markdown
    section, the protocol note and the per-cell columns; None otherwise."""
    part = score_outcomes(outcomes, oracle)
    if part is None:
        return None
    return {"json": part, "markdown": markdown(part), "note": protocol_note(part["task"]), "columns": row_columns(part)}
