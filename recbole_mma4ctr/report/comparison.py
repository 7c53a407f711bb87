"""Comparison tables and plots, made from result records and saved predictions only (never logs).

``write_comparison(folder, outcomes, marks, protocol)`` reads each cell's record and predictions
(``record.read_predictions``) and writes ``comparison.json``,
``comparison.csv``, ``comparison.md``, ``test_auc_by_epoch.png`` (``valid_auc_by_step.png`` when trained to the plateau) and ``loss_curves.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..experiment.challenge import cell_actions, challenge_cells, comparison_part, REFERENCE
from ..files import write_text
from ..model.tasks import action_view
from ..prepare.atomic import listed_file
from ..record import read_predictions, scored_rows_digest
from ..settings import tooling
from ..stats import COLDNESS_GROUPS, delong, paired_bootstrap, predictions_by_coldness, summarize
from . import tables
from .tables import write_csv

METRICS = ("auc", "gauc", "uauc", "logloss")


def oracle_probabilities(record: dict, predictions: dict) -> np.ndarray | None:
    """The generator's true probabilities of the scored test pairs, when the data has them: only
    a sidecar the dataset's manifest lists counts (real data's folder may hold an older one)."""
    config = record.get("config") or {}
    path = listed_file(str(config.get("data_path", "")), f"{record['dataset']}.oracle.npy")
    if path is None:
        return None
    oracle = np.load(path, allow_pickle=False)
    rows = np.rint(predictions["timestamp"]).astype(np.int64)
    if rows.min(initial=0) < 0 or rows.max(initial=-1) >= len(oracle):
        return None
    return oracle[rows]


def model_row(model: str, record: dict | None, marks, action: str | None = None) -> dict:
    """The table row of one cell's record; for a multi-task record, of ``action``'s scores (its
    epoch marks are the primary action's, so they are left out)."""
    if record is None:
        return {"model": model, "status": "not run"}
    if record.get("status") != "ok":
        return {"model": model, "status": record.get("status"), "error": record.get("error"), "record": record.get("record_path")}
    row = {"model": model, "status": "ok", "record": record.get("record_path"), "run_id": record.get("run_id"),
           "where": record.get("where")}
    by_epoch = {entry["epoch"]: entry for entry in (record.get("test_by_epoch") if action is None else None) or []}
    for mark in marks:
        entry = by_epoch.get(mark, {})
        for metric in METRICS:
            row[f"{metric}@{mark}"] = entry.get(metric)
    predictions = read_predictions(record)
    if predictions is not None and action is not None:
        predictions = action_view(predictions, action)
    if predictions is not None and len(predictions["score"]):
        summary = summarize(predictions["score"], predictions["label"], predictions["user"],
                            tooling("report")["bootstrap_resamples"], probabilities=True)
        row.update({f"best_{k}": v for k, v in summary.items()})
        row["logloss_on"] = record.get("logloss_on")
        row["test_pairs"] = int(len(predictions["score"]))
        row["test_rows_sha256"] = ((record.get("test_rows") if action is None else None)
                                   or scored_rows_digest(predictions))["sha256"]
        row["_predictions"] = predictions
    coldness = record.get("test_by_coldness") if action is None else predictions_by_coldness(predictions)
    for group, values in (coldness or {}).items():
        for name in ("rows", "auc", "gauc", "uauc"):
            row[f"{group}_{name}"] = values.get(name)
    row.update({
        "train_seconds": record.get("train_seconds"),
        "test_seconds": record.get("test_seconds"),
        "trainable_parameters": record.get("trainable_parameters"),
        "device": record.get("device"),
        "epochs_run": record.get("epochs_run"),
        "steps": record.get("steps"),
        "train_batch_size": record.get("train_batch_size"),
        "stopped_on": record.get("stopped_on"),
        "valid_plateau": record.get("valid_plateau"),
    })
    return row


def training_cell(row: dict) -> str:
    """How long a model trained and whether its validation had levelled off, e.g.
    ``620 steps x 2,048, plateau (best ep 4)`` or ``62 steps x 8,192, epochs; still improving``."""
    if row.get("steps") is None:
        return "-"
    text = f"{row['steps']:,} steps x {row.get('train_batch_size') or 0:,}, {row.get('stopped_on') or '?'}"
    plateau = row.get("valid_plateau")
    if plateau is None:
        return text + "; not validated"
    if plateau["reached"]:
        return text + f" (best ep {plateau['best_epoch']})"
    return text + f"; still improving (best ep {plateau['best_epoch']})"


ORACLE = "oracle (true probabilities)"


def oracle_row(records: dict) -> dict | None:
    for record in records.values():
        if record and record.get("status") == "ok":
            predictions = read_predictions(record)
            if predictions is None:
                continue
            oracle = oracle_probabilities(record, predictions)
            if oracle is None:
                return None
            summary = summarize(oracle, predictions["label"], predictions["user"], tooling("report")["bootstrap_resamples"],
                                probabilities=True)
            return {"model": ORACLE, "status": "ok", **{f"best_{k}": v for k, v in summary.items()},
                    "test_pairs": int(len(oracle))}
    return None


def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def has_cold_rows(rows) -> bool:
    return any((row.get("cold_items_rows") or 0) > 0 or (row.get("cold_users_rows") or 0) > 0 for row in rows)


def comparison_cells(rows, marks) -> tuple[list[str], list[list[str]]]:
    """The comparison table (header, cell texts): one row per model, from ``rows`` as comparison.json holds them."""
    cold = has_cold_rows(rows)
    header = ["model"] + [f"AUC@{m}" for m in marks] + [f"GAUC@{m}" for m in marks] + [f"UAUC@{m}" for m in marks] \
        + [f"LogLoss@{m}" for m in marks] + ["best-valid AUC [95% CI]"] \
        + (["warm-item AUC (rows)", "cold-item AUC (rows)", "cold-user AUC (rows)"] if cold else []) \
        + ["training (steps x batch, stopped on)", "train s", "test s", "parameters", "device"]
    lines = []
    for row in rows:
        if row["status"] != "ok":
            lines.append([row["model"], f"{row['status']}: {row.get('error') or ''}"] + [""] * (len(header) - 2))
            continue
        star = "*" if row.get("logloss_on") == "sigmoid(score)" else ""
        cells = [row["model"]]
        for metric in ("auc", "gauc", "uauc"):
            cells += [_fmt(row.get(f"{metric}@{m}")) for m in marks]
        cells += [_fmt(row.get(f"logloss@{m}")) + (star if row.get(f"logloss@{m}") is not None else "") for m in marks]
        ci = row.get("best_auc_ci95") or [None, None]
        cells.append(f"{_fmt(row.get('best_auc'))} [{_fmt(ci[0])}, {_fmt(ci[1])}]")
        if cold:
            cells += [f"{_fmt(row.get(f'{g}_auc'))} ({_fmt(row.get(f'{g}_rows'))})" for g in COLDNESS_GROUPS]
        cells += [training_cell(row) if row["model"] != ORACLE else "-", _fmt(row.get("train_seconds"), 1), _fmt(row.get("test_seconds"), 1),
                  _fmt(row.get("trainable_parameters")), _fmt(row.get("device"))]
        lines.append(cells)
    return header, lines


SEED_METRICS = ("best_auc", "best_gauc", "best_uauc", "cold_items_auc", "warm_items_auc", "cold_users_auc")


def over_seeds(rows) -> list[dict]:
    """Per model (cells named ``<model>-seed<k>``): the seeds and mean / sd (ddof 1) over them."""
    models: dict = {}
    for row in rows:
        if row["status"] == "ok":
            models.setdefault(row["_group"], []).append(row)
    summary = []
    for model, cells in models.items():
        entry = {"model": model, "seeds": [c["seed"] for c in cells], "mean": {}, "sd": {}}
        for metric in SEED_METRICS:
            values = [c[metric] for c in cells if c.get(metric) is not None and not np.isnan(c[metric])]
            if values:
                entry["mean"][metric] = float(np.mean(values))
                entry["sd"][metric] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        summary.append(entry)
    return summary


def aligned(reference: dict, other: dict):
    """Row orders that put two prediction sets on the same (user, item, timestamp) rows with the
    same labels, or None when they did not score the same test rows."""
    if len(reference["score"]) != len(other["score"]):
        return None
    orders = [np.lexsort((p["timestamp"], p["item"].astype(str), p["user"].astype(str))) for p in (reference, other)]
    for column in ("user", "item", "timestamp", "label"):
        a, b = reference[column][orders[0]], other[column][orders[1]]
        if not np.array_equal(a.astype(str) if column in ("user", "item") else a,
                              b.astype(str) if column in ("user", "item") else b):
            return None
    return orders


def paired_entries(rows) -> list[dict]:
    """Each model against MMa4CTR, seed-matched (model seed k against MMa4CTR seed k): the AUC
    difference (model - MMa4CTR), its 95 % paired user-bootstrap interval and DeLong's p."""
    reference = {(row["seed"], row["action"]): row for row in rows if row["_model"] == REFERENCE and "_predictions" in row}
    entries = []
    for row in rows:
        pair = (row["seed"], row["action"])
        if row["_model"] == REFERENCE or "_predictions" not in row or pair not in reference:
            continue
        base = reference[pair]
        entry = {"model": row["_group"], "against": REFERENCE, "seed": row["seed"], "cell": row["model"],
                 "against_cell": base["model"], "difference_is": f"AUC(model) - AUC({REFERENCE})",
                 **({"action": row["action"]} if row["action"] else {})}
        orders = aligned(base["_predictions"], row["_predictions"])
        if orders is None:
            entries.append({**entry, "error": "the two cells did not score the same test rows"})
            continue
        mine, theirs = row["_predictions"], base["_predictions"]
        scores, against = mine["score"][orders[1]], theirs["score"][orders[0]]
        labels, users = theirs["label"][orders[0]], theirs["user"][orders[0]]
        boot = paired_bootstrap(scores, against, labels, users, tooling("report")["paired_resamples"])
        test = delong(scores, against, labels)
        low, high = boot["ci95"]
        entry.update(test_pairs=int(len(labels)), difference=boot["difference"], ci95=boot["ci95"],
                     resamples=boot["resamples"], delong_p=test["p_value"], within_noise=bool(low <= 0 <= high))
        entries.append(entry)
    return entries


def seeds_cells(summary) -> tuple[list[str], list[list[str]]]:
    """The over-seeds table (header, cell texts) from comparison.json's ``models``."""
    cold = any("cold_items_auc" in entry["mean"] for entry in summary)
    metrics = [("best_auc", "AUC"), ("best_gauc", "GAUC"), ("best_uauc", "UAUC")] \
        + ([("cold_items_auc", "cold-item AUC")] if cold else [])
    header = ["model", "seeds"] + [f"{name} mean +- sd" for _, name in metrics]
    lines = []
    for entry in summary:
        cells = [entry["model"], ", ".join(str(s) for s in entry["seeds"])]
        cells += [f"{_fmt(entry['mean'].get(m))} +- {_fmt(entry['sd'].get(m))}" for m, _ in metrics]
        lines.append(cells)
    return header, lines


def paired_cells(entries) -> tuple[list[str], list[list[str]]]:
    """The paired table (header, cell texts) from comparison.json's ``paired``."""
    header = ["model", "seed", f"AUC - {REFERENCE}'s", "95% paired CI (users)", "DeLong p", "verdict"]
    lines = []
    for e in entries:
        if "error" in e:
            lines.append([e["model"], "-" if e["seed"] is None else e["seed"], "-", "-", "-", e["error"]])
            continue
        verdict = "within noise" if e["within_noise"] else (f"{REFERENCE} better" if e["difference"] < 0 else "model better")
        lines.append([e["model"], "-" if e["seed"] is None else e["seed"], f"{e['difference']:+.4f}",
                      f"[{e['ci95'][0]:+.4f}, {e['ci95'][1]:+.4f}]", f"{e['delong_p']:.3g}", verdict])
    return header, lines


PROTOCOL_WORDS = {
    "honest": "MMa4CTR's profiles from the training split only",
    "paper": "the authors' pipeline: their row dedupe and order (grouped by user), their device choice and "
             "per-modality reduction; MMa4CTR's profiles from ALL interactions, test labels included (a leak, "
             "reproduced to measure it; properties/protocol/paper.yaml)",
    "challenge": "the challenge's own protocol: one run per scored action, scored as the challenge scored it "
                 "(properties/protocol/challenge.yaml); MMa4CTR's profiles from the training split only",
}


def split_words(split: dict | None) -> str:
    """A record's ``split`` (how its rows were cut, as run) in words; never recomputed."""
    if not split:
        return "not recorded (a record written before records carried their split)"
    ratios = "/".join(f"{float(r):g}" for r in split.get("ratios") or []) or "?"
    if split.get("rule") == "day":
        train, valid, test = (list(split.get("days") or []) + ["?"] * 3)[:3]
        return f"by day: train days up to {train}, valid days up to {valid}, test days up to {test}"
    if split.get("rule") == "positional":
        return (f"the authors' cut by position, train/valid/test {ratios} of their user-grouped row order "
                f"(a user-level hold-out: test users have no training rows)")
    order = "in time order" if split.get("order") == "TO" else f"in order {split.get('order')}"
    per = f", per {split['group_by']}" if split.get("group_by") not in (None, "none") else " over all interactions"
    return f"chronological, train/valid/test {ratios} of the rows {order}{per} (RecBole's RS cut)"


def protocol_lines(records) -> list[str]:
    """One sentence per (protocol, split) the records state, naming the runs when they differ."""
    groups: dict = {}
    for record in records:
        if record is None or record.get("status") != "ok":
            continue
        protocol = record.get("protocol") or "not recorded"
        groups.setdefault((protocol, split_words(record.get("split"))), []).append(record.get("cell") or record["model"])
    lines = []
    for (protocol, split), names in groups.items():
        what = f" ({PROTOCOL_WORDS[protocol]})" if protocol in PROTOCOL_WORDS else ""
        runs = f" Runs: {', '.join(names)}." if len(groups) > 1 else ""
        lines.append(f"Protocol: **{protocol}**{what}. Split: {split}.{runs}")
    return lines


def cell_rows(outcomes):
    """(cell, record, action) per table row: a multi-task challenge cell gives one row per action
    (``challenge.cell_actions``), any other cell one row (its challenge action or None)."""
    for cell, record in outcomes:
        for action in cell_actions(cell) or [None]:
            yield cell, record, action


def write_comparison(folder, outcomes, marks, protocol: str) -> str:
    """The comparison's tables and plots from ``outcomes``: (cell, its record or None) in order."""
    folder = Path(folder)

    records = {cell["cell"]: record for cell, record in outcomes}
    challenge = comparison_part(outcomes, oracle_probabilities)
    rows = []
    for cell, record, action in cell_rows(outcomes):
        extra = cell.get("extra") or {}
        name = f"{cell['cell']}-{action}" if "challenge_actions" in extra else cell["cell"]
        row = model_row(name, record, marks, action if "challenge_actions" in extra else None)
        # a row is <model>[-seed<k>][-<action>]: seeds group per model and action, pairs match both
        row["seed"], row["action"] = extra.get("seed_of_cell"), action
        model = name
        for suffix in ([f"-{row['action']}"] if row["action"] else []) + ([f"-seed{row['seed']}"] if row["seed"] is not None else []):
            model = model[:-len(suffix)] if model.endswith(suffix) else model
        row["_model"] = model
        row["_group"] = model + (f"-{row['action']}" if row["action"] else "")
        row.update((challenge or {}).get("columns", {}).get(name, {}))
        rows.append(row)
    seeds = sorted({row["seed"] for row in rows if row["seed"] is not None}) or None
    summary = over_seeds(rows)
    paired = paired_entries(rows)
    oracle = None if challenge else oracle_row(records)   # the challenge section has one per action
    digests: dict = {}   # per action (the challenge's actions are different labels of the same rows)
    for row in rows:
        if row.get("test_rows_sha256"):
            digests.setdefault(row.get("action"), set()).add(row["test_rows_sha256"])
    same_pairs = all(len(found) == 1 for found in digests.values()) if digests else None
    resamples = tooling("report")
    table = tables.markdown(*comparison_cells(rows + ([oracle] if oracle else []), marks))
    notes = protocol_lines(records.values()) + [challenge["note"] if challenge else "",
        (f"Metrics at epoch marks {marks} are on the test split with the weights after that epoch; "
         "'best-valid AUC' is the test AUC of the best-validation checkpoint, with a 95% interval from "
         f"{resamples['bootstrap_resamples']} bootstrap resamples of users. The epoch-mark columns are the test metric of the weights at "
         "that epoch, not a selected model; selection (early stopping, best checkpoint) reads validation only."
         if marks else
         "Every model trained to its validation plateau (train_to: plateau): "
         + plateau_rule(records) + " 'best-valid AUC' is the test AUC of the best-validation checkpoint, "
         f"with a 95% interval from {resamples['bootstrap_resamples']} bootstrap resamples of users; selection reads "
         "validation only."),
        "Training: optimizer steps x batch size, and why training stopped: 'plateau' (validation stopped "
        "improving), 'step budget', 'epochs' (all epochs run); 'still improving' marks a model whose best "
        "validation came within the last plateau_patience validations, i.e. one that would have gained from "
        "more steps.",
        "LogLoss marked * is computed on sigmoid(score): those models output ranking scores, not "
        "probabilities (RecBole's own LogLoss would clip the raw scores).",
        "FPMC, BERT4Rec and GCSAN never train on the label: their AUC measures how well next-item "
        "likelihood separates the labels. BPR, NGCF and LightGCN train on observed interactions.",
        (f"Every model scored the same test rows (one SHA-256 of their sorted (user, item, timestamp, label)): "
         f"{same_pairs}.") if same_pairs is not None else "",
    ]
    if oracle:
        notes.append("The oracle row scores the generator's true probabilities on the same test pairs: "
                     "the best any model could do on this sample.")
    if has_cold_rows(rows):
        notes.append("Warm items were seen in the training split, cold items never; cold users have no training "
                     "row. Their AUC is over those test rows only (rows in brackets; '-' where a group has no "
                     "rows or one class); GAUC and UAUC per group are in comparison.json.")
    sections = [f"# Comparison on {records_dataset(records)}", table] + [n for n in notes if n]
    if challenge:
        sections.append(challenge["markdown"])
    if seeds and len(seeds) > 1:
        sections += ["## Over seeds", "Mean +- sd (ddof 1) over the seeds of the best-valid test metrics.",
                     tables.markdown(*seeds_cells(summary))]
    if paired:
        sections += [f"## Against {REFERENCE}, paired on the same test rows",
                     f"Each model's test AUC minus {REFERENCE}'s, seed-matched (model seed k against {REFERENCE} "
                     "seed k" + (", and action-matched: each action's run against MMa4CTR's run on that action"
                                 if challenge else "") + "), on the same (user, item, timestamp) rows; 95% interval from "
                     f"{resamples['paired_resamples']} paired bootstrap "
                     "resamples of users; DeLong's two-sided p treats rows as independent. A difference whose "
                     "interval contains 0 is within noise.", tables.markdown(*paired_cells(paired))]
    markdown = "\n\n".join(sections) + "\n"
    write_text(folder / "comparison.md", markdown)
    plain_rows = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows + ([oracle] if oracle else [])]
    write_text(folder / "comparison.json", json.dumps({"protocol": protocol, "marks": marks,
                                                        "train_to": "epochs" if marks else "plateau",
                                                        "same_test_pairs": same_pairs,
                                                        "seeds": seeds, "models": summary, "paired": paired,
                                                        "rows": plain_rows,
                                                        **({"challenge": challenge["json"]} if challenge else {})}, indent=2, default=_json_default))
    write_csv(folder / "comparison.csv", plain_rows)
    plot_curves(folder, records)
    return table


def json_tables(summary: dict) -> list[tuple[list[str], list[list[str]]]]:
    """The tables of comparison.md, in its order (comparison, challenge, over seeds, paired), made
    again from the rows comparison.json holds (``summary``: the file's content)."""
    found = [comparison_cells(summary["rows"], summary["marks"] or [])]
    if summary.get("challenge"):
        found.append(challenge_cells(summary["challenge"]))
    if summary.get("seeds") and len(summary["seeds"]) > 1:
        found.append(seeds_cells(summary["models"]))
    if summary.get("paired"):
        found.append(paired_cells(summary["paired"]))
    return found


def plateau_rule(records) -> str:
    """The plateau settings the records ran with, in words (from the first record that has them)."""
    for record in records.values():
        config = (record or {}).get("config") or {}
        if record and record.get("status") == "ok" and "plateau_patience" in config:
            return (f"training stopped after {config['plateau_patience']} validations without improvement, "
                    f"or at {config['plateau_step_budget']:,} optimizer steps, with the batch size lowered so "
                    f"every epoch has at least {config['plateau_min_steps_per_epoch']} steps.")
    return ""


def records_dataset(records) -> str:
    for record in records.values():
        if record and record.get("dataset"):
            return record["dataset"]
    return "?"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def plot_curves(folder: Path, records: dict) -> None:
    """Test AUC by epoch for every model, and train / valid loss curves (headless, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ok = {m: r for m, r in records.items() if r and r.get("status") == "ok"}
    by_epoch = any(record.get("test_by_epoch") for record in ok.values())
    figure, axis = plt.subplots(figsize=(8, 5))
    for model, record in ok.items():
        if by_epoch:      # the paper's view: test AUC of the weights after each epoch
            points = [(p["epoch"], p["auc"]) for p in record.get("test_by_epoch") or []]
        else:             # trained to the plateau: validation AUC against optimizer steps (what selection saw)
            points = [(h["steps"], h["valid"]["auc"]) for h in record.get("history") or []
                      if not h.get("interrupted") and "auc" in (h.get("valid") or {}) and "steps" in h]
        if points:
            axis.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, label=model)
    axis.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("epoch" if by_epoch else "optimizer steps")
    axis.set_ylabel("test AUC" if by_epoch else "validation AUC")
    axis.set_title("Test AUC after each epoch" if by_epoch else "Validation AUC by optimizer step")
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8, ncol=2)
    axis.grid(alpha=0.3)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    figure.savefig(folder / ("test_auc_by_epoch.png" if by_epoch else "valid_auc_by_step.png"), dpi=120)
    plt.close(figure)

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for model, record in ok.items():
        history = [h for h in record.get("history") or [] if not h.get("interrupted")]
        if not history:
            continue
        epochs = [h["epoch"] + 1 for h in history]
        left.plot(epochs, [h["train_loss"] for h in history], marker="o", markersize=3, label=model)
        valid = [(h["epoch"] + 1, h["valid"].get("logloss")) for h in history if h.get("valid")]
        if valid:
            right.plot([e for e, _ in valid], [v for _, v in valid], marker="o", markersize=3, label=model)
    left.set(xlabel="epoch", ylabel="train loss (sum over batches, model's own loss)", title="Training loss", yscale="log")
    right.set(xlabel="epoch", ylabel="valid LogLoss", title="Validation LogLoss", yscale="log")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / "loss_curves.png", dpi=120)
    plt.close(figure)
