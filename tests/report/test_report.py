"""Reports from records only: every promised figure, a self-contained HTML, missing pieces said."""

import re

import pytest

from conftest import copy_atomic, run_settings


@pytest.fixture(scope="module")
def two_runs(tiny_atomic, tmp_path_factory):
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    tmp = tmp_path_factory.mktemp("report")
    source, _ = tiny_atomic
    copy_atomic(source, tmp / "data", "tw")
    # the dataset statistics read the manifest next to the atomic files
    (tmp / "data" / "tw" / "manifest.json").write_text((source / "manifest.json").read_text())
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
    assert "Cold items under the chronological split" in text


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
