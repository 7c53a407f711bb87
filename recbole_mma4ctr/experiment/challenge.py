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

A multi-task model (``multitask.py``: ShareBottom, MMoE, PLE, MMa4CTRMultiTask, their ``+mm``)
is ONE cell instead: it trains once on ``<data_path>/all_actions`` (converted with
``action_labels: true`` and the round's first action as ``label``, the one RecBole's validation
reads) with ``task_actions`` the round's actions, and scores every action from its saved test
predictions (``score_<action>``, ``label_<action>``). The converter keeps the same rows whatever
the label (no row depends on it under this protocol), so its test rows per action are the
single-task cells' (the digest per action says so), and ``report.py`` shows it one row per action
(``<cell>-<action>``) next to them, paired with MMa4CTR's run on that action.

Cells stay plain data: this module only says which settings, names and extras each action's
cell gets (:func:`action_variants`); ``compare.plan_cells`` makes them and ``report/comparison.py`` calls
:func:`comparison_part` for the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cells import protocol_settings, read_config_texts, TASKS_KEY
from ..config import typed_value
from ..errors import ChallengeError
from ..model.tasks import action_view, is_multitask
from ..record import read_predictions, scored_rows_digest
from ..report import tables
from ..settings import read_yaml, tooling
from ..stats import challenge_score, challenge_score_resamples, uauc_users, weighted_auc

LABEL_SETTING = "label_action"      # both converters' label choice (properties/dataset/*.yaml)
METRICS = ("uauc", "auc")
REFERENCE = "MMa4CTR"               # the paired score differences are each model's minus this model's
MULTITASK_FOLDER = "all_actions"    # <data_path>/all_actions: every action's column, for the multi-task cells


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


def action_variants(model: str, dataset: str, protocol: str, config_files, settings: dict) -> list[tuple[str, dict, dict]]:
    """One ``(name suffix, settings, extra)`` per action of the challenge's round for a cell of
    ``model`` with ``settings``: the dataset's protocol settings (where the user's layers do not
    set them), the user's settings, then the action as the label and its own data folder. For a
    multi-task ``model`` one variant: every action of the round, in one folder (module docstring)."""
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
    if is_multitask(model):
        actions = list(task.weights)
        return [("", {**defaults, **typed, LABEL_SETTING: actions[0], "action_labels": True, "task_actions": actions,
                      "data_path": f"{root}/{MULTITASK_FOLDER}"},
                 {"challenge_actions": actions, "challenge": task.describe()})]
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

    cells = [(cell, record, action) for cell, record in outcomes for action in cell_actions(cell)]
    if not cells:
        return None
    task = dict(cells[0][0]["extra"]["challenge"])
    entries: dict = {}
    views: dict = {}     # model -> action -> its test predictions (score, label, user) for the intervals
    oracle_actions: dict = {}
    for cell, record, action in cells:
        extra = cell["extra"]
        multitask = "challenge_actions" in extra
        name = cell["cell"] if multitask else cell["cell"][: -len(action) - 1] if cell["cell"].endswith(f"-{action}") \
            else cell["cell"]
        row = f"{cell['cell']}-{action}" if multitask else cell["cell"]
        entry = entries.setdefault(name, {"model": name, "seed": extra.get("seed_of_cell"), "actions": {},
                                          "kind": "multi-task, one run" if multitask else "one run per action"})
        if record is None or record.get("status") != "ok":
            entry["actions"][action] = {"cell": row, "status": record.get("status") if record else "not run"}
            continue
        predictions = read_predictions(record)
        if predictions is None:
            entry["actions"][action] = {"cell": row, "status": "no predictions"}
            continue
        if multitask:
            predictions = action_view(predictions, action)
        views.setdefault(name, {})[action] = predictions
        entry["actions"][action] = {"cell": row, "status": "ok", "run_id": record.get("run_id"),
                                    "test_rows": scored_rows_digest(predictions)["sha256"],
                                    **action_metric(task["metric"], predictions)}
        if oracle is not None and not multitask and action not in oracle_actions:
            probabilities = oracle(record, predictions)
            if probabilities is not None:
                oracle_actions[action] = action_metric(task["metric"], {**predictions, "score": probabilities})
    result = list(entries.values())
    for entry in result:
        entry["score"] = challenge_score({a: (e.get("value") if e.get("status") == "ok" else None)
                                          for a, e in entry["actions"].items()}, task["weights"])
    oracle_entry = {"model": "oracle (true probabilities)", "seed": None, "actions": oracle_actions,
                    "score": challenge_score({a: e.get("value") for a, e in oracle_actions.items()}, task["weights"])}
    same = same_test_rows(result)
    paired = score_intervals(result, views, task, paired=bool(same) and all(same.values()))
    if set(oracle_actions) == set(task["weights"]):
        result.append(oracle_entry)
    return {"task": task, "formula": formula(task), "entries": result, "same_test_rows": same, "paired": paired}


def score_intervals(entries, views, task: dict, paired: bool) -> list[dict]:
    """Each entry's 95 % interval of the score over whole-user bootstrap draws (``score_ci95``;
    ``evaluation.challenge_score_resamples``) and, where every entry scored the same rows
    (``paired``), each model's score minus MMa4CTR's (seed-matched) with its paired interval."""
    import numpy as np


    complete = [e for e in entries if e["score"] is not None and set(views.get(e["model"], ())) >= set(task["weights"])]
    if not complete:
        return []
    draws = challenge_score_resamples([views[e["model"]] for e in complete], task["metric"], task["weights"],
                                      tooling("report")["challenge_resamples"])
    for entry, values in zip(complete, draws):
        entry["score_ci95"] = [float(np.nanquantile(values, 0.025)), float(np.nanquantile(values, 0.975))]
    if not paired:
        return []
    reference = {e["seed"]: i for i, e in enumerate(complete) if e["model"].rsplit("-seed", 1)[0] == REFERENCE}
    pairs = []
    for index, entry in enumerate(complete):
        against = reference.get(entry["seed"])
        if against is None or against == index:
            continue
        difference = draws[index] - draws[against]
        low, high = float(np.nanquantile(difference, 0.025)), float(np.nanquantile(difference, 0.975))
        pairs.append({"model": entry["model"], "kind": entry["kind"], "against": complete[against]["model"],
                      "difference": entry["score"] - complete[against]["score"], "ci95": [low, high],
                      "within_noise": bool(low <= 0 <= high)})
    return pairs


def cell_actions(cell: dict) -> list[str]:
    """The challenge actions a cell scores: its one action, a multi-task cell's every action, or none."""
    extra = cell.get("extra") or {}
    return list(extra.get("challenge_actions") or ([extra["challenge_action"]] if extra.get("challenge_action") else []))


def same_test_rows(entries) -> dict:
    """Per action, whether every entry that scored it scored the same rows (one digest)."""
    digests: dict = {}
    for entry in entries:
        for action, values in entry["actions"].items():
            if values.get("test_rows"):
                digests.setdefault(action, set()).add(values["test_rows"])
    return {action: len(found) == 1 for action, found in digests.items()}


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
    dropped), the score and its interval."""
    task = part["task"]
    name = "uAUC" if task["metric"] == "uauc" else "AUC"
    actions = list(task["weights"])
    header = ["model", "seed", "runs"] + [f"{a} {name} (w {_weight(task['weights'][a])})" for a in actions] \
        + ["score", "95% CI (users)"]
    rows = []
    for entry in part["entries"]:
        cells = [entry["model"], "-" if entry["seed"] is None else str(entry["seed"]), entry.get("kind", "-")]
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
        interval = entry.get("score_ci95")
        cells.append(f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "-")
        rows.append(cells)
    return header, rows


def paired_challenge_cells(part: dict) -> tuple[list[str], list[list[str]]]:
    """The paired table (header, cell texts): each model's score minus the reference's."""
    header = ["model", "runs", f"score - {REFERENCE}'s", "95% paired CI (users)", "verdict"]
    rows = []
    for pair in part.get("paired") or []:
        verdict = "within noise" if pair["within_noise"] else ("model better" if pair["difference"] > 0 else
                                                               f"{REFERENCE} better")
        rows.append([pair["model"], pair["kind"], f"{pair['difference']:+.4f}",
                     f"[{pair['ci95'][0]:+.4f}, {pair['ci95'][1]:+.4f}]", verdict])
    return header, rows


def markdown(part: dict) -> str:
    """The challenge section: the table (``challenge_cells``), whether every entry scored the same
    test rows, the paired table and the score over seeds."""
    task = part["task"]
    name = "uAUC" if task["metric"] == "uauc" else "AUC"
    title = f"WeChat Big Data Challenge 2021, round {task['round']}" if task["dataset"] == "wechat" else "ICME 2019 track 1"
    sections = [f"## Challenge score ({title})",
                f"score = {part['formula']}, each action's {name} on the test split of the run trained with that "
                "action as its label (a multi-task entry: its one run's score for that action)"
                + (" (users whose test rows hold one class are dropped, as the challenge dropped them; their count "
                   "is in brackets)" if task["metric"] == "uauc" else "; global AUC over all test rows") + ".",
                tables.markdown(*challenge_cells(part))]
    same = part.get("same_test_rows") or {}
    if same:
        differing = [action for action, ok in same.items() if not ok]
        sections.append("Same test rows per action (one SHA-256 of the sorted (user, item, timestamp, label) rows "
                        "for every entry, multi-task and single-task alike): "
                        + ("yes, for every action." if not differing else f"NO for {', '.join(differing)}."))
    if part.get("paired"):
        sections += [f"Challenge score against {REFERENCE}'s (one run per action), seed-matched, on the same test "
                     "rows; intervals from bootstrap draws of whole users, the same draws for both models and "
                     "every action (stats.challenge_score_resamples).", tables.markdown(*paired_challenge_cells(part))]
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
            f"the label, or once as a multi-task model scoring every action; each row of the table above is one "
            f"(model, action) run, or one action of a multi-task run (its epoch marks are left out: RecBole "
            f"evaluated its primary action only).")


def comparison_part(outcomes, oracle=None) -> dict | None:
    """What ``report.write_comparison`` adds under a challenge protocol: the json part, the markdown
    section, the protocol note and the per-cell columns; None otherwise."""
    part = score_outcomes(outcomes, oracle)
    if part is None:
        return None
    return {"json": part, "markdown": markdown(part), "note": protocol_note(part["task"]), "columns": row_columns(part)}
