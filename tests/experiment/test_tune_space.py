"""--tune's search without Ray: the samples drawn (distinct, seeded, a small space counted as
duplicates), the data settings a hyper file may not vary (read from the converters), and one
driver per results folder (a second command stops at once naming the holder's pid)."""

import math
import os
import subprocess
import sys

import pytest

from conftest import REPO


def dim(name, kind, values):
    from recbole_mma4ctr.experiment.tune import Dimension

    return Dimension(name, kind, values, 1)


# ---- the samples ------------------------------------------------------------------------------------
def test_a_space_smaller_than_num_samples_runs_each_setting_once_and_counts_the_rest():
    from recbole_mma4ctr.experiment.tune import draw_points

    points, duplicates = draw_points([dim("learning_rate", "choice", [0.001, 0.01])], 5, 2024)
    assert points == [{"learning_rate": 0.001}, {"learning_rate": 0.01}] and duplicates == 3
    # a repeated choice is one setting; randint's high bound is excluded
    points, duplicates = draw_points([dim("b", "choice", [64, 64]), dim("r", "randint", [0, 2])], 3, 1)
    assert points == [{"b": 64, "r": 0}, {"b": 64, "r": 1}] and duplicates == 1
    # every grid value times num_samples: 2 x (2 distinct + 1 duplicate)
    points, duplicates = draw_points([dim("fusion", "grid", ["vt_cross", "textual"]),
                                      dim("learning_rate", "choice", [0.001, 0.01])], 3, 7)
    assert len(points) == 4 and duplicates == 2
    assert {(p["fusion"], p["learning_rate"]) for p in points} == {(f, lr) for f in ("vt_cross", "textual")
                                                                   for lr in (0.001, 0.01)}


def test_a_larger_space_draws_again_until_every_sample_is_distinct():
    from recbole_mma4ctr.experiment.tune import draw_points

    space = [dim("learning_rate", "choice", [0.001, 0.003, 0.01]), dim("train_batch_size", "choice", [1024, 4096])]
    points, duplicates = draw_points(space, 5, 2024)            # 6 settings, 5 asked: 5 distinct ones
    assert duplicates == 0 and len(points) == 5
    assert len({(p["learning_rate"], p["train_batch_size"]) for p in points}) == 5
    assert draw_points(space, 5, 2024) == (points, 0)                   # seeded: the same draws again
    assert draw_points(space, 3, 2024)[0] == points[:3]                 # fewer samples: the first ones
    assert draw_points(space, 5, 7)[0] != points                        # another seed, other draws


def test_kinds_sample_within_their_bounds_as_recbole_reads_them():
    from recbole_mma4ctr.experiment.tune import distinct_values, draw_points

    space = [dim("learning_rate", "loguniform", [-9.2, -4.6]), dim("embedding_size", "quniform", [16, 128, 16]),
             dim("dropout_prob", "uniform", [0, 0.5]), dim("n", "qrandint", [2, 10, 4]),
             dim("wd", "qloguniform", [-3, 0, 0.1])]
    points, duplicates = draw_points(space, 40, 3)
    assert duplicates == 0 and len(points) == 40
    for p in points:
        assert math.exp(-9.2) <= p["learning_rate"] <= math.exp(-4.6)   # natural-log bounds
        assert p["embedding_size"] in range(16, 129, 16) and isinstance(p["embedding_size"], int)
        assert 0 <= p["dropout_prob"] <= 0.5
        assert p["n"] in (4, 8)
        assert p["wd"] in distinct_values(space[4])
    assert distinct_values(space[4]) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


# ---- data settings ----------------------------------------------------------------------------------
def test_data_settings_come_from_the_converters_themselves(tmp_path, monkeypatch):
    from recbole_mma4ctr.prepare import byo, sources, tiktok, wechat
    from recbole_mma4ctr.experiment.tune import TuneError, read_hyper_file

    settings = sources.data_settings()
    assert set(wechat.SETTINGS) | set(tiktok.SETTINGS) | set(byo.SETTINGS) | set(sources.SOURCE_SETTINGS) <= settings
    assert {"text_recipe", "converter_seed", "row_order", "chunk_rows", "dataset", "data_path"} <= settings
    assert "learning_rate" not in settings
    hyper = tmp_path / "new.hyper"
    hyper.write_text("learning_rate choice [0.001]\nnew_converter_key choice [1,2]\n")
    assert len(read_hyper_file(hyper)) == 2
    monkeypatch.setattr(wechat, "SETTINGS", wechat.SETTINGS + ("new_converter_key",))   # a converter grows a key
    with pytest.raises(TuneError, match=r"new\.hyper, line 2: new_converter_key is a data setting"):
        read_hyper_file(hyper)


# ---- one driver per results folder ------------------------------------------------------------------
def test_a_second_command_in_a_results_folder_stops_at_once_naming_the_holder(tmp_path, capsys):
    from recbole_mma4ctr import cli
    from recbole_mma4ctr.experiment import engine
    from recbole_mma4ctr.errors import FolderBusyError

    folder = tmp_path / "results" / "compare-wechat-honest"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from recbole_mma4ctr.experiment.engine import claim_folder; "
                               f"claim_folder({str(folder)!r}); print('held', flush=True); sys.stdin.read()"],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=rf"{folder}: another command \(pid {holder.pid}\) is running"):
            engine.claim_folder(folder)
        # the command line: exit 2, one line, before any data is prepared or Ray started
        status = cli.main(["--compare", "--models=FM", "--dataset=wechat", "--synthetic_scale=tiny",
                           f"--results_dir={tmp_path / 'results'}", f"--data_path={tmp_path / 'atomic'}"])
        error = capsys.readouterr().err.strip()
        assert status == 2 and len(error.splitlines()) == 1
        assert str(folder) in error and f"pid {holder.pid}" in error
        assert not (tmp_path / "atomic").exists()
    finally:
        holder.communicate("", timeout=60)
    engine.claim_folder(folder)            # the holder ended: the folder is free
    try:
        engine.claim_folder(folder)        # a process may claim a folder it holds again
        assert (folder / engine.DRIVER_LOCK).read_text().strip() == str(os.getpid())
    finally:
        engine.release_folder(folder)
