"""tuned_vs_default.md: tuned final cells paired with default cells of the same model and seed.

Planted: model A's tuned scores separate the labels much better than its default scores on the
same rows (the paired interval must lie above 0); model B's tuned cell scored other test rows
(no difference may be computed); model C has no default cell."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recbole_mma4ctr.record import scored_rows_digest, SCHEMA, write_record
from recbole_mma4ctr.report.tuned_vs_default import by_model, tuned_vs_default, write_tuned_vs_default

pytestmark = pytest.mark.unit  # pure: no RecBole training, no Ray (python -m pytest -m unit)


def predictions(rng, rows: int, signal: float, users: int = 200, shift: int = 0) -> dict:
    labels = rng.random(rows) < 0.3
    return {"user": (np.arange(rows) % users).astype(str), "item": (np.arange(rows) + shift).astype(str),
            "timestamp": np.arange(rows, dtype=np.float64), "label": labels.astype(np.float32),
            "score": (signal * labels + rng.normal(size=rows)).astype(np.float32)}


def write_cell(folder, model: str, seed: int, scored: dict, tuned: bool, run: int) -> None:
    record = {"schema": SCHEMA, "run_id": f"r{run}", "status": "ok", "model": model, "dataset": "wechat",
              "kind": "compare", "key": f"{model}-{seed}-{tuned}", "started_at": "2026-12-07T00:00:00Z",
              "finished_at": f"2026-12-07T00:00:{run:02d}Z", "where": {}, "best_valid": {"auc": 0.6},
              "test": {"auc": 0.5}, "history": [], "config": {"seed": seed}, "split_sizes": {"test": 1},
              "marks": [3], "test_rows": scored_rows_digest(scored)}
    if tuned:
        record["tuned"] = {"settings": {"learning_rate": 0.01}}
    write_record(record, folder, scored)


def test_pairs_by_model_and_seed_and_refuses_other_test_rows(tmp_path):
    rng = np.random.default_rng(0)
    tuned_folder, default_folder = tmp_path / "compare-wechat-honest-tuned", tmp_path / "compare-wechat-honest"
    run = 0
    for seed in (1, 2):
        base = predictions(np.random.default_rng(seed), 3000, 0.0)
        better = {**base, "score": (2.5 * base["label"] + rng.normal(size=3000)).astype(np.float32)}
        for folder, scored, tuned in ((default_folder, base, False), (tuned_folder, better, True)):
            run += 1
            write_cell(folder, "A", seed, scored, tuned, run)
    run += 1
    write_cell(default_folder, "B", 1, predictions(rng, 3000, 1.0), False, run)
    run += 1
    write_cell(tuned_folder, "B", 1, predictions(rng, 3000, 1.0, shift=7), True, run)
    run += 1
    write_cell(tuned_folder, "C", 1, predictions(rng, 3000, 1.0), True, run)

    entries = tuned_vs_default(tuned_folder, default_folder, resamples=200)
    assert [(e["model"], e["seed"]) for e in entries] == [("A", 1), ("A", 2), ("B", 1), ("C", 1)]
    for entry in entries[:2]:
        assert entry["difference"] > 0.2 and entry["ci95"][0] > 0 and entry["verdict"] == "tuned better"
    assert entries[2]["error"] == "the two cells did not score the same test rows" and "difference" not in entries[2]
    assert entries[3]["error"] == "no default cell with this model and seed"

    summary = {row["model"]: row for row in by_model(entries)}
    assert summary["A"]["seeds_paired"] == "2/2" and summary["A"]["verdicts"] == "2 tuned better"
    assert summary["A"]["difference"] == pytest.approx(np.mean([e["difference"] for e in entries[:2]]))
    assert summary["B"]["seeds_paired"] == "0/1" and summary["B"]["difference"] is None

    assert write_tuned_vs_default(tuned_folder, default_folder) is not None
    written = json.loads((tuned_folder / "tuned_vs_default.json").read_text())
    assert [row["model"] for row in written["models"]] == ["A", "B", "C"]
    assert "B seed 1: the two cells did not score the same test rows" in (tuned_folder / "tuned_vs_default.md").read_text()


def test_nothing_is_written_without_default_cells(tmp_path):
    tuned_folder = tmp_path / "tuned"
    write_cell(tuned_folder, "A", 1, predictions(np.random.default_rng(0), 100, 1.0), True, 1)
    assert write_tuned_vs_default(tuned_folder, tmp_path / "absent") is None
    assert not (tuned_folder / "tuned_vs_default.md").exists()
