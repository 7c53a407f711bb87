"""Every number of comparison.md / .csv / .json and report.md / .html is the number of the record it
came from (issue 26): a results folder of hand-made records with known values (no training), its
tables parsed back and each cell checked against the record's fields."""

import csv
import html
import json
import re

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from recbole_mma4ctr.record import SCHEMA, read_record, write_record
from recbole_mma4ctr.report.comparison import write_comparison
from recbole_mma4ctr.report.page import write_report

pytestmark = pytest.mark.unit  # pure: no RecBole training, no Ray (python -m pytest -m unit)

MARKS = [1, 2]
SEEDS = [11, 5]
# per model: how strongly its score follows the label (MMa4CTR strongest), and whether its LogLoss
# is on sigmoid(score) (a ranking model: the table marks it with *)
MODELS = {"MMa4CTR": (2.0, None), "FM": (1.0, None), "BPR": (0.3, "sigmoid(score)")}
GROUPS = {"warm_items": "warm-item AUC (rows)", "cold_items": "cold-item AUC (rows)",
          "cold_users": "cold-user AUC (rows)"}
N_USERS = 60
PER_USER = 6 + np.arange(N_USERS) % 9   # unequal users: GAUC (row-weighted) differs from UAUC


def by_hand(scores, labels, users) -> dict:
    """AUC (sklearn), GAUC and UAUC (sklearn per user, users with both classes), LogLoss (sklearn)."""
    per_user, sizes = [], []
    for user in np.unique(users):
        mine = users == user
        if 0 < labels[mine].sum() < mine.sum():
            per_user.append(roc_auc_score(labels[mine], scores[mine]))
            sizes.append(mine.sum())
    return {"auc": roc_auc_score(labels, scores), "gauc": float(np.dot(per_user, sizes) / np.sum(sizes)),
            "uauc": float(np.mean(per_user)), "logloss": log_loss(labels, scores)}


def make_record(folder, rng, model, seed, test_rows):
    """One ok record with its predictions: the same test rows for every cell (scores differ); the
    epoch-mark metrics and coldness groups are distinct random numbers (any mix-up shows)."""
    users, items, labels, timestamps = test_rows
    signal, logloss_on = MODELS[model]
    scores = 1 / (1 + np.exp(-(signal * (labels - 0.5) + rng.normal(size=len(labels)))))
    test_by_epoch = [{"epoch": epoch, **{metric: float(rng.uniform(0.5, 0.9)) for metric in ("auc", "gauc", "uauc")},
                      "logloss": float(rng.uniform(0.3, 0.7))} for epoch in MARKS]
    coldness = {group: {"rows": int(rng.integers(1, 500)), "auc": float(rng.uniform(0.5, 0.9)),
                        "gauc": float(rng.uniform(0.5, 0.9)), "uauc": float(rng.uniform(0.5, 0.9))} for group in GROUPS}
    record = {"schema": SCHEMA, "status": "ok", "run_id": f"20261207-000000-{model.lower()}{seed}", "model": model,
              "dataset": "hand", "kind": "compare", "key": f"{model}-{seed}", "cell": f"{model}-seed{seed}",
              "protocol": "honest", "started_at": "2026-12-07T00:00:00+00:00",
              "finished_at": "2026-12-07T00:01:00+00:00", "where": {}, "best_valid": {"auc": 0.7},
              "test": by_hand(scores, labels, users), "test_by_epoch": test_by_epoch, "test_by_coldness": coldness,
              "history": [{"epoch": 0, "train_loss": 1.0, "valid": {"auc": 0.6, "logloss": 0.5}}], "config": {}, "split_sizes": {"test": len(labels)}, "logloss_on": logloss_on,
              "train_seconds": float(rng.uniform(1, 100)), "test_seconds": float(rng.uniform(1, 10)),
              "trainable_parameters": int(rng.integers(1_000, 100_000)), "device": "cpu (2 cores)",
              "epochs_run": 2, "steps": int(rng.integers(10, 5_000)), "train_batch_size": 2048,
              "stopped_on": "epochs", "valid_plateau": None}
    predictions = {"user": users, "item": items, "timestamp": timestamps, "label": labels, "score": scores}
    record = read_record(write_record(record, folder, predictions))
    cell = {"cell": f"{model}-seed{seed}", "model": model, "extra": {"seed_of_cell": seed}}
    return cell, record


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The results folder: 3 models x 2 seeds, comparison files and report written from it."""
    folder = tmp_path_factory.mktemp("numbers")
    rng = np.random.default_rng(26)
    users = np.repeat([f"u{k}" for k in range(N_USERS)], PER_USER)
    n = len(users)
    test_rows = (users, np.array([f"i{k}" for k in rng.integers(0, 90, n)]), (rng.random(n) < 0.35).astype(np.float64),
                 np.arange(n, dtype=np.float64))
    outcomes = [make_record(folder, rng, model, seed, test_rows) for seed in SEEDS for model in MODELS]
    write_comparison(folder, outcomes, MARKS, "honest")
    write_report(folder)
    return folder, {cell["cell"]: record for cell, record in outcomes}


def pipe_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table of a markdown text, as rows of cell texts (the rule line dropped)."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                current.append([cell.strip() for cell in line[1:-1].split("|")])
        elif current:
            found.append(current)
            current = []
    return found


def html_tables(text: str) -> list[list[list[str]]]:
    """Every <table> of an HTML page, as rows of unescaped cell texts (the header row first)."""
    return [[[html.unescape(cell) for cell in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)]
             for row in re.findall(r"<tr>(.*?)</tr>", table)] for table in re.findall(r"<table>(.*?)</table>", text)]


def by_row(table) -> dict:
    """{first cell: {header: cell}} of a parsed table."""
    header, *rows = table
    return {row[0]: dict(zip(header, row)) for row in rows}


def four(value) -> str:
    return f"{value:.4f}"


def expected_comparison_row(record) -> dict:
    """What comparison.md's row of a record must say: its numbers at 4 decimals (seconds at 1)."""
    marks = {entry["epoch"]: entry for entry in record["test_by_epoch"]}
    star = "*" if record["logloss_on"] == "sigmoid(score)" else ""
    row = {"model": record["cell"]}
    for metric, name in (("auc", "AUC"), ("gauc", "GAUC"), ("uauc", "UAUC")):
        row.update({f"{name}@{m}": four(marks[m][metric]) for m in MARKS})
    row.update({f"LogLoss@{m}": four(marks[m]["logloss"]) + star for m in MARKS})
    for group, header in GROUPS.items():
        values = record["test_by_coldness"][group]
        row[header] = f"{four(values['auc'])} ({values['rows']:,})"
    row["training (steps x batch, stopped on)"] = f"{record['steps']:,} steps x 2,048, epochs; not validated"
    row.update({"train s": f"{record['train_seconds']:.1f}", "test s": f"{record['test_seconds']:.1f}",
                "parameters": f"{record['trainable_parameters']:,}", "device": record["device"]})
    return row


def check_comparison_table(table, records, summary):
    rows = by_row(table)
    assert set(rows) == set(records)
    for cell, record in records.items():
        shown = rows[cell]
        for header, text in expected_comparison_row(record).items():
            assert shown[header] == text, (cell, header)
        low, high = next(r for r in summary["rows"] if r["model"] == cell)["best_auc_ci95"]
        assert shown["best-valid AUC [95% CI]"] == f"{four(record['test']['auc'])} [{four(low)}, {four(high)}]", cell
        assert low < record["test"]["auc"] < high


def over_seeds(records) -> dict:
    """model -> {label: (mean, sd ddof 1)} of its records' best-valid test metrics over the seeds."""
    found = {}
    for model in MODELS:
        mine = [records[f"{model}-seed{seed}"] for seed in SEEDS]
        values = {"AUC": [r["test"]["auc"] for r in mine], "GAUC": [r["test"]["gauc"] for r in mine],
                  "UAUC": [r["test"]["uauc"] for r in mine],
                  "cold-item AUC": [r["test_by_coldness"]["cold_items"]["auc"] for r in mine]}
        found[model] = {label: (np.mean(v), np.std(v, ddof=1)) for label, v in values.items()}
    return found


def check_seeds_table(table, records):
    rows = by_row(table)
    assert set(rows) == set(MODELS)
    for model, stats in over_seeds(records).items():
        assert rows[model]["seeds"] == ", ".join(str(s) for s in SEEDS)
        for label, (mean, sd) in stats.items():
            assert rows[model][f"{label} mean +- sd"] == f"{four(mean)} +- {four(sd)}", (model, label)


def check_paired_table(table, records):
    header, *lines = table
    assert len(lines) == (len(MODELS) - 1) * len(SEEDS)
    for line in lines:
        shown = dict(zip(header, line))
        seed = int(shown["seed"])
        difference = records[f"{shown['model']}-seed{seed}"]["test"]["auc"] - records[f"MMa4CTR-seed{seed}"]["test"]["auc"]
        assert shown["AUC - MMa4CTR's"] == f"{difference:+.4f}", shown


@pytest.mark.parametrize("name", ["comparison.md", "report.md", "report.html"])
def test_page_numbers_are_the_records(folder, name):
    path, records = folder
    summary = json.loads((path / "comparison.json").read_text())
    text = (path / name).read_text()
    comparison, seeds, paired = html_tables(text) if name.endswith(".html") else pipe_tables(text)
    check_comparison_table(comparison, records, summary)
    check_seeds_table(seeds, records)
    check_paired_table(paired, records)


def test_comparison_json_numbers_are_the_records(folder):
    path, records = folder
    summary = json.loads((path / "comparison.json").read_text())
    rows = {row["model"]: row for row in summary["rows"]}
    assert set(rows) == set(records) and summary["seeds"] == sorted(SEEDS) and summary["marks"] == MARKS
    for cell, record in records.items():
        row = rows[cell]
        for entry in record["test_by_epoch"]:
            for metric in ("auc", "gauc", "uauc", "logloss"):
                assert row[f"{metric}@{entry['epoch']}"] == entry[metric], (cell, metric)
        for metric in ("auc", "gauc", "uauc", "logloss"):
            assert row[f"best_{metric}"] == pytest.approx(record["test"][metric], abs=1e-12), (cell, metric)
        for group, values in record["test_by_coldness"].items():
            for name in ("rows", "auc", "gauc", "uauc"):
                assert row[f"{group}_{name}"] == values[name], (cell, group, name)
        assert row["test_pairs"] == PER_USER.sum() and row["seed"] == int(cell.rpartition("seed")[2])
        for name in ("train_seconds", "test_seconds", "trainable_parameters", "steps", "logloss_on"):
            assert row[name] == record[name], (cell, name)
    models = {entry["model"]: entry for entry in summary["models"]}
    names = {"AUC": "best_auc", "GAUC": "best_gauc", "UAUC": "best_uauc", "cold-item AUC": "cold_items_auc"}
    for model, stats in over_seeds(records).items():
        assert models[model]["seeds"] == SEEDS
        for label, (mean, sd) in stats.items():
            assert models[model]["mean"][names[label]] == pytest.approx(mean, abs=1e-12), (model, label)
            assert models[model]["sd"][names[label]] == pytest.approx(sd, abs=1e-12), (model, label)
    for entry in summary["paired"]:
        difference = records[entry["cell"]]["test"]["auc"] - records[entry["against_cell"]]["test"]["auc"]
        assert entry["difference"] == pytest.approx(difference, abs=1e-12)
        assert entry["test_pairs"] == PER_USER.sum()


def test_comparison_csv_numbers_are_the_records(folder):
    path, records = folder
    with open(path / "comparison.csv", newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(records)
    for cell, record in records.items():
        row = rows[cell]
        for entry in record["test_by_epoch"]:
            for metric in ("auc", "gauc", "uauc", "logloss"):
                assert float(row[f"{metric}@{entry['epoch']}"]) == entry[metric], (cell, metric)
        for metric in ("auc", "gauc", "uauc", "logloss"):
            assert float(row[f"best_{metric}"]) == pytest.approx(record["test"][metric], abs=1e-12), (cell, metric)
        for group, values in record["test_by_coldness"].items():
            assert int(row[f"{group}_rows"]) == values["rows"] and float(row[f"{group}_auc"]) == values["auc"]
        assert int(row["test_pairs"]) == PER_USER.sum()
        assert int(row["trainable_parameters"]) == record["trainable_parameters"]
        assert float(row["train_seconds"]) == record["train_seconds"]
