"""Reports from records only: every promised figure, a self-contained HTML, missing pieces said."""

import re

import pytest

from conftest import copy_atomic, run_settings


@pytest.fixture(scope="module")
def two_runs(tiny_atomic, tmp_path_factory):
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    tmp = tmp_path_factory.mktemp("report")
    source, _ = tiny_atomic
    # the dataset statistics read the manifest next to the atomic files (one describing this folder)
    copy_atomic(source, tmp / "data", "tw", manifest=True)
    folder = tmp / "results"
    for model in ("MMa4CTR", "FM"):
        run_recbole_mma4ctr(model, "tw", None, run_settings(tmp, data_path=tmp / "data", results_dir=folder, epochs=2,
                                                             profile_length=5))
    return folder


def test_report_has_every_promised_figure_and_a_self_contained_html(two_runs):
    from recbole_mma4ctr.report.page import write_report

    md_path, html_path = write_report(two_runs)
    for figure in ("roc_tw.png", "map_hidden_MMa4CTR.png", "map_input_MMa4CTR.png", "label_rates_tw.png", "counts_tw.png"):
        assert (two_runs / figure).stat().st_size > 5_000, figure
    page = html_path.read_text()
    sources = re.findall(r"src='([^']+)'", page)
    assert len(sources) == 5
    for source in sources:
        assert "/" not in source and (two_runs / source).exists()
    assert "http" not in page and "<script" not in page
    text = md_path.read_text()
    assert "No hidden-layer map for FM" in text
    assert ("Protocol: **honest** (MMa4CTR's profiles from the training split only). Split: chronological, "
            "train/valid/test 0.8/0.1/0.1 of the rows in time order over all interactions (RecBole's RS cut).") in text
    assert re.search(r"Cold items: [0-9,]+ of [0-9,]+ test rows \([0-9.]+%\) on items never seen in training", text)


def test_report_on_a_folder_without_runs_says_so(tmp_path):
    from recbole_mma4ctr.report.page import write_report

    md_path, _ = write_report(tmp_path)
    assert "No successful run" in md_path.read_text()


def test_report_of_a_missing_folder_is_a_clear_error(tmp_path):
    from recbole_mma4ctr.report.page import write_report

    with pytest.raises(FileNotFoundError, match="no such results folder"):
        write_report(tmp_path / "nope")


def test_report_command_line(two_runs):
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "run_recbole_mma4ctr.py"), f"--report={two_runs}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].endswith("report.html")
    missing = subprocess.run([sys.executable, str(REPO / "run_recbole_mma4ctr.py"), f"--report={two_runs}/nope"],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no such results folder" in missing.stderr


def test_records_give_test_metrics_by_coldness(two_runs):
    import numpy as np

    from recbole_mma4ctr.record import read_predictions, records_in

    for record in records_in(two_runs):
        groups, predictions = record["test_by_coldness"], read_predictions(record)
        # the tiny sample releases feeds over time: some test rows are on items first seen after
        # training (generator 1.3: ~13 %); every user has training rows
        warm = predictions["warm_item"]
        assert warm.dtype == bool and predictions["warm_user"].all()
        assert 0.05 < (~warm).mean() < 0.25
        assert groups["warm_items"]["rows"] == int(warm.sum()) and groups["cold_items"]["rows"] == int((~warm).sum())
        assert groups["warm_items"]["rows"] + groups["cold_items"]["rows"] == record["split_sizes"]["test"] == len(warm)
        assert groups["cold_users"]["rows"] == 0 and groups["cold_users"]["auc"] is None
        for name, rows in (("warm_items", warm), ("cold_items", ~warm)):
            assert groups[name]["auc"] == pytest.approx(_auc(predictions["score"][rows], predictions["label"][rows]))
        assert np.isfinite(groups["warm_items"]["gauc"])


def _auc(score, label):
    """Mann-Whitney AUC, ties counted half."""
    import pandas as pd

    label = label > 0.5
    ranks = pd.Series(score).rank(method="average").to_numpy()
    n_pos, n_neg = label.sum(), (~label).sum()
    return (ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


# ---- issue 19, defect 12: the protocol and split are the record's, never recomputed -------------

def hand_record(folder, model, protocol, split, data_path, cold_rows, test_rows):
    """A valid ok record as a run writes it, with the protocol, split and cold-item counts given."""
    from recbole_mma4ctr.record import SCHEMA, write_record

    metrics = {"auc": 0.6, "gauc": 0.6, "uauc": 0.6, "logloss": 0.5}
    return write_record({
        "schema": SCHEMA, "run_id": f"r-{model}", "status": "ok", "model": model, "dataset": "hand", "kind": "run",
        "key": model, "started_at": "2026-12-07T00:00:00Z", "finished_at": "2026-12-07T00:01:00Z", "where": {},
        "protocol": protocol, "split": split, "best_valid": metrics, "test": metrics, "history": [],
        "split_sizes": {"train": 400, "valid": 50, "test": test_rows},
        "test_by_coldness": {"cold_items": {"rows": cold_rows, "auc": None}},
        "config": {"data_path": str(data_path), "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
                   "field_separator": "\t"}}, folder)


CHALLENGE_LINE = ("Protocol: **challenge** (the challenge's own protocol: one run per scored action, scored as the "
                  "challenge scored it (properties/protocol/challenge.yaml); MMa4CTR's profiles from the training "
                  "split only). Split: by day: train days up to 12, valid days up to 13, test days up to 14. Runs: DIN.")
PAPER_LINE = ("Protocol: **paper** (the authors' pipeline: their row dedupe and order (grouped by user), their device "
              "choice and per-modality reduction; MMa4CTR's profiles from ALL interactions, test labels included (a "
              "leak, reproduced to measure it; properties/protocol/paper.yaml)). Split: the authors' cut by position, "
              "train/valid/test 0.8/0.1/0.1 of their user-grouped row order (a user-level hold-out: test users have "
              "no training rows). Runs: MMa4CTR.")


def test_the_report_states_each_records_protocol_and_split(tmp_path):
    # before: every non-honest run was said to use "the paper's grouped split" (a challenge run
    # too), cold items came from a split the report recomputed, and the .inter was read by position
    from recbole_mma4ctr.report.page import write_report

    data = tmp_path / "data" / "hand"
    data.mkdir(parents=True)
    rows = [f"i{k % 6}\t{k}\tu{k % 4}\t{k % 2}" for k in range(10)]   # the user column is not the first
    (data / "hand.inter").write_text("item_id:token\ttimestamp:float\tuser_id:token\tlabel:float\n" + "\n".join(rows) + "\n")
    results = tmp_path / "results"
    day = {"rule": "day", "ratios": [0.8, 0.1, 0.1], "order": "TO", "group_by": None, "days": [12, 13, 14]}
    positional = {"rule": "positional", "ratios": [0.8, 0.1, 0.1], "order": "TO", "group_by": None, "days": None}
    hand_record(results, "DIN", "challenge", day, data, cold_rows=7, test_rows=50)
    hand_record(results, "MMa4CTR", "paper", positional, data, cold_rows=0, test_rows=50)
    text = write_report(results)[0].read_text()
    assert CHALLENGE_LINE in text and PAPER_LINE in text
    assert "grouped split" not in text and "chronological" not in text
    # the counts are the records' (the 10-row file could not give 50 test rows), one per split
    assert ("Cold items: 7 of 50 test rows (14.0%) on items never seen in training, split by day: train days up to "
            "12, valid days up to 13, test days up to 14 (as DIN recorded it); 0 of 50 test rows (0.0%) on items never "
            "seen in training, split the authors' cut by position") in text
    assert "4 users, 6 items, 10 interactions" in text


def test_a_day_split_run_is_recorded_with_the_challenge_protocol_and_its_split(tiny_atomic, tmp_path):
    # before: a run with split_rule day (no protocol named) was recorded as protocol "honest"
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    source, _ = tiny_atomic
    copy_atomic(source, tmp_path / "data", "tw", manifest=True)
    record = run_recbole_mma4ctr("FM", "tw", None, run_settings(tmp_path, data_path=tmp_path / "data", epochs=1,
                                                                split_rule="day", split_days="[12, 13, 14]"))
    assert record["protocol"] == "challenge"
    assert record["split"] == {"rule": "day", "ratios": [0.8, 0.1, 0.1], "order": "TO", "group_by": None,
                               "days": [12, 13, 14]}
