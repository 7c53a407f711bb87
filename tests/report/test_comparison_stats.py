"""Seeds and paired significance in the comparison table, from synthetic records (no training)."""

import json

import numpy as np
import pytest

from recbole_mma4ctr.stats import by_coldness, delong, paired_bootstrap
from recbole_mma4ctr.record import SCHEMA, write_record


def fake_cell(folder, model, seed, scores, truth, order=None):
    users, items, labels, timestamps, warm_item, warm_user = truth
    order = np.arange(len(scores)) if order is None else order
    predictions = {"user": users[order], "item": items[order], "timestamp": timestamps[order], "label": labels[order],
                   "score": scores[order], "raw_score": scores[order]}
    record = {"schema": SCHEMA, "status": "ok", "run_id": f"r{seed}-{model}", "model": model, "dataset": "syn",
              "kind": "compare", "key": f"{model}{seed}", "started_at": "x", "finished_at": "y", "where": {},
              "best_valid": {"auc": 0.5}, "test": {"auc": 0.5}, "history": [], "config": {}, "split_sizes": {},
              "test_by_coldness": by_coldness(scores, labels, users, warm_item, warm_user)}
    path = write_record(record, folder, predictions)
    record.update(record_path=str(path), predictions=path.name.replace(".json", ".predictions.npz"))
    name = f"{model}-seed{seed}"
    return {"cell": name, "model": model, "extra": {"seed_of_cell": seed}}, record


@pytest.mark.unit
def test_seeds_and_paired_entries(tmp_path):
    from recbole_mma4ctr.report.comparison import write_comparison

    rng = np.random.default_rng(0)
    n = 4000
    users = np.repeat(np.arange(400), 10).astype(str)
    items = rng.integers(0, 300, n).astype(str)
    labels = (rng.random(n) < 0.3).astype(np.float64)
    timestamps = np.arange(n, dtype=np.float64)
    warm_item = rng.random(n) < 0.85
    warm_user = rng.random(n) < 0.95
    truth = (users, items, labels, timestamps, warm_item, warm_user)
    outcomes, scores = [], {}
    for seed in (2024, 7):
        shared = rng.normal(size=n)
        scores[("MMa4CTR", seed)] = 1.0 * labels + shared + rng.normal(size=n)
        scores[("Weak", seed)] = 0.4 * labels + shared + rng.normal(size=n)
        scores[("Same", seed)] = 1.0 * labels + shared + rng.normal(size=n)
        for model in ("MMa4CTR", "Weak", "Same"):
            # Weak's rows come in another order: the pairing must align them by (user, item, timestamp)
            order = rng.permutation(n) if model == "Weak" else None
            outcomes.append(fake_cell(tmp_path, model, seed, scores[(model, seed)], truth, order))
    write_comparison(tmp_path, outcomes, [], "honest")
    summary = json.loads((tmp_path / "comparison.json").read_text())
    assert summary["seeds"] == [7, 2024]
    models = {m["model"]: m for m in summary["models"]}
    from recbole_mma4ctr.stats import weighted_auc

    aucs = [weighted_auc(scores[("Weak", s)], labels) for s in (2024, 7)]
    assert models["Weak"]["mean"]["best_auc"] == pytest.approx(np.mean(aucs))
    assert models["Weak"]["sd"]["best_auc"] == pytest.approx(np.std(aucs, ddof=1))
    assert "cold_items_auc" in models["Weak"]["mean"]
    paired = {(p["model"], p["seed"]): p for p in summary["paired"]}
    assert set(paired) == {("Weak", 2024), ("Weak", 7), ("Same", 2024), ("Same", 7)}
    for seed in (2024, 7):
        weak = paired[("Weak", seed)]
        users_boot = paired_bootstrap(scores[("Weak", seed)], scores[("MMa4CTR", seed)], labels, users, 1000)
        assert weak["difference"] == pytest.approx(users_boot["difference"]) and weak["difference"] < -0.05
        assert weak["ci95"][1] < 0 and not weak["within_noise"]
        assert weak["delong_p"] == pytest.approx(delong(scores[("Weak", seed)], scores[("MMa4CTR", seed)], labels)["p_value"])
    assert any(paired[("Same", s)]["within_noise"] for s in (2024, 7))
    table = (tmp_path / "comparison.md").read_text()
    assert "## Over seeds" in table and "within noise" in table and "MMa4CTR better" in table
    assert "cold-item AUC (rows)" in table
    rows = {r["model"]: r for r in summary["rows"]}
    assert rows["Weak-seed7"]["cold_items_rows"] == int((~warm_item).sum())


@pytest.mark.unit
def test_cells_that_scored_other_rows_are_not_paired(tmp_path):
    from recbole_mma4ctr.report.comparison import write_comparison

    n = 200
    rng = np.random.default_rng(1)
    truth = (np.repeat(np.arange(20), 10).astype(str), np.arange(n).astype(str), (rng.random(n) < 0.4) * 1.0,
             np.arange(n, dtype=float), np.ones(n, bool), np.ones(n, bool))
    other = (truth[0], truth[1], truth[2], truth[3] + 1, truth[4], truth[5])
    outcomes = [fake_cell(tmp_path, "MMa4CTR", 1, rng.random(n), truth), fake_cell(tmp_path, "BPR", 1, rng.random(n), other)]
    write_comparison(tmp_path, outcomes, [], "honest")
    summary = json.loads((tmp_path / "comparison.json").read_text())
    assert summary["paired"][0]["error"].startswith("the two cells did not score")
    assert "cold-item AUC" not in (tmp_path / "comparison.md").read_text()
