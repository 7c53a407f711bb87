"""A result's identity is what it ran on (issue 19, defects 1, 2, 4, 5 and the temporary files of 11).

- The resume key is the effective config minus an explicit plumbing list, the sha256 of every
  data file the run reads (cached by path, size, times and inode) and the code version.
- A folder the project did not create is read-only input.
- Atomic files are checked against their manifest (sizes, digests) before a run trusts them.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from enum import Enum
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_atomic
from recbole_mma4ctr.cells import cell_config, make_cell
from recbole_mma4ctr.errors import InputError
from recbole_mma4ctr.prepare import atomic, digests, sources
from recbole_mma4ctr.prepare.wechat import convert
from recbole_mma4ctr.resume_key import PLUMBING, cell_identity, code_version


# ------------------------------------------------------------------ small data with a known content
def write_mine(folder: Path, name: str = "mine", flip: int | None = None) -> Path:
    """A bring-your-own dataset: 40 users x 6 rows, labels alternating (``flip`` turns one row's label)."""
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    rows = ["user_id:token\titem_id:token\ttimestamp:float\tlabel:float"]
    for index in range(240):
        label = (index + (index == flip)) % 2
        rows.append(f"u{index % 40}\ti{index % 17}\t{index}\t{label}")
    (target / f"{name}.inter").write_text("\n".join(rows) + "\n")
    (target / f"{name}.item").write_text("item_id:token\tcolour:token\n" + "".join(f"i{i}\tc{i % 3}\n" for i in range(17)))
    return target


def settings_for(tmp_path: Path, data: Path, **extra) -> dict:
    return {"data_path": str(data), "results_dir": str(tmp_path / "results"), "checkpoint_dir": str(tmp_path / "saved"),
            "digest_cache": str(tmp_path / "cache" / "digests.json"), "show_progress": False, **extra}


def changed(value):
    """A value of the same kind that differs from ``value``."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, Enum):
        return next(member for member in type(value) if member != value)
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + ["x"]
    if isinstance(value, dict):
        return {**value, "x": 1}
    if value is None:
        return "x"
    return str(value) + "x"


# ------------------------------------------------------------------ (a) the effective config
def test_every_key_of_the_effective_config_but_plumbing_changes_the_key():
    cell = make_cell("MMa4CTR", "wechat", None, {}, marks=[2, 4])
    config = dict(cell_config(cell).final_config_dict)
    data = {"wechat.inter": "0" * 64}
    base = cell_identity(cell, config, data)["key"]
    deciding = [key for key in config if key not in PLUMBING]
    assert len(deciding) > 100 and "shuffle" in deciding and "learning_rate" in deciding
    for key in deciding:
        assert cell_identity(cell, {**config, key: changed(config[key])}, data)["key"] != base, key
    for key in PLUMBING:   # present or not in this config, a plumbing key never changes the key
        assert cell_identity(cell, {**config, key: changed(config.get(key))}, data)["key"] == base, key
    assert cell_identity(cell, config, {"wechat.inter": "1" * 64})["key"] != base
    assert cell_identity({**cell, "marks": [4]}, config, data)["key"] != base     # same epochs, other tests
    assert cell_identity({**cell, "model": "MMa4CTR+x"}, config, data)["key"] != base


def test_settings_reach_the_key_through_the_effective_config_and_plumbing_does_not(tmp_path):
    def key(model="DIN", settings=None, marks=None, texts=None):
        cell = make_cell(model, "wechat", None, settings or {}, marks=marks)
        cell["config_texts"] += texts or []
        return cell_identity(cell, cell_config(cell), {})["key"]

    base = key()
    # defect 2: shuffle was plumbing, so a --shuffle=False rerun was skipped
    assert key(settings={"shuffle": "False"}) != base
    assert key(settings={"learning_rate": "0.002"}) != base
    assert key(settings={"text_recipe": "tfidf"}) != base                  # a converter setting
    assert key(texts=[("mine.yaml", "train_batch_size: 512\n")]) != base   # a config file's content
    assert key(model="DIN+mm") != base
    assert key(marks=[3]) != key(marks=[1, 3]) != base
    assert key(settings={"epochs": 3}) == key(settings={"epochs": "3"})    # typed the same way
    plumbing = {"data_path": str(tmp_path / "elsewhere"), "checkpoint_dir": str(tmp_path / "c"), "gpu_id": "",
                "show_progress": "False", "results_dir": str(tmp_path / "r"), "torch_threads": 2, "state": "warning",
                "raw_root": str(tmp_path), "digest_cache": str(tmp_path / "d.json")}
    assert key(settings=plumbing) == base


# ------------------------------------------------------------------ (b) the data digests and their cache
def test_digests_are_cached_until_a_file_changes_even_with_its_old_size_and_time(tmp_path, monkeypatch):
    path = tmp_path / "a.inter"
    path.write_bytes(b"0123456789")
    cache = tmp_path / "cache" / "d.json"
    reads = []
    real = digests.sha256_of
    monkeypatch.setattr(digests, "sha256_of", lambda p: reads.append(p) or real(p))
    first = digests.file_digests([path], cache)[str(path)]
    assert first == hashlib.sha256(b"0123456789").hexdigest() and len(reads) == 1
    assert digests.file_digests([path], cache)[str(path)] == first and len(reads) == 1    # cached
    stat = path.stat()
    with open(path, "r+b") as handle:          # same size, modification time put back by hand
        handle.write(b"X")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert digests.file_digests([path], cache)[str(path)] == hashlib.sha256(b"X123456789").hexdigest()
    assert len(reads) == 2
    assert set(json.loads(cache.read_text())) == {os.path.realpath(path)}


def test_data_digests_name_the_content_not_the_folder(tmp_path):
    from recbole_mma4ctr.prepare.sources import data_digests

    def found(data):
        cell = make_cell("DIN", "mine", None, settings_for(tmp_path, data))
        return data_digests(cell_config(cell))

    write_mine(tmp_path / "A")
    shutil.copytree(tmp_path / "A", tmp_path / "C")
    write_mine(tmp_path / "B", flip=7)
    a = found(tmp_path / "A")
    assert set(a) == {"mine.inter", "mine.item"}
    assert a["mine.inter"] == hashlib.sha256((tmp_path / "A" / "mine" / "mine.inter").read_bytes()).hexdigest()
    assert found(tmp_path / "C") == a and found(tmp_path / "B")["mine.inter"] != a["mine.inter"]
    (tmp_path / "elsewhere.npz").write_bytes(b"modalities")   # mm_file outside the folder counts too
    cell = make_cell("DIN", "mine", None, settings_for(tmp_path, tmp_path / "A", mm_file=str(tmp_path / "elsewhere.npz")))
    assert data_digests(cell_config(cell))["mm_file"] == hashlib.sha256(b"modalities").hexdigest()


def fake_ok_record(cell: dict, folder: Path) -> None:
    """A finished record for ``cell`` as a comparison leaves it (no training needed to test the skip)."""
    from recbole_mma4ctr.record import SCHEMA, where, write_record

    write_record({"schema": SCHEMA, "status": "ok", "run_id": cell["run_id"], "model": cell["model"],
                  "dataset": cell["dataset"], "kind": "compare", "key": cell["key"], "identity": cell["identity"],
                  "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:01+00:00",
                  "where": where(), "best_valid": {"auc": 0.65}, "test": {"auc": 0.65}, "history": [], "config": {},
                  "split_sizes": {}}, folder)


def compare_plan(tmp_path: Path, data: Path, model: str = "DIN"):
    """What ``--compare`` decides before it runs anything: (the cell, results folder, finished cells)."""
    from recbole_mma4ctr.experiment.engine import prepare_grid

    cells = [make_cell(model, "mine", None, settings_for(tmp_path, data), kind="compare", prepare=False)]
    _, folder, done = prepare_grid(cells, "compare-mine")
    return cells[0], folder, done


def test_a_rerun_on_other_data_under_the_same_name_runs_again(tmp_path):
    # defect 1: data_path was plumbing and a bring-your-own dataset had no fingerprint, so the same
    # command on folder B (same name, other content), or after an edit in place, was skipped
    def plan(data):
        return compare_plan(tmp_path, data)

    write_mine(tmp_path / "A")
    write_mine(tmp_path / "B", flip=3)
    cell, folder, done = plan(tmp_path / "A")
    assert done == {}
    fake_ok_record(cell, folder)
    assert set(plan(tmp_path / "A")[2]) == {cell["key"]}        # same content: skipped
    shutil.copytree(tmp_path / "A", tmp_path / "moved")
    assert set(plan(tmp_path / "moved")[2]) == {cell["key"]}    # the same files in another folder: skipped
    other, _, done = plan(tmp_path / "B")
    assert done == {} and other["identity"]["data"]["mine.inter"] != cell["identity"]["data"]["mine.inter"]
    inter = tmp_path / "A" / "mine" / "mine.inter"               # edited in place, same size
    text = inter.read_text()
    inter.write_text(text.replace("u0\ti0\t0\t0", "u0\ti0\t0\t1", 1))
    assert inter.read_text() != text and len(inter.read_text()) == len(text)
    assert plan(tmp_path / "A")[2] == {}
    assert cell["identity"]["code"] == code_version()


def test_shuffled_modalities_under_the_same_name_run_again(tmp_path):
    # defect 1 as reported: folder B holds the same name with the item vectors shuffled
    write_mine(tmp_path / "A")
    vectors = np.random.default_rng(0).random((17, 8), dtype=np.float32)
    ids = np.array([f"i{i}" for i in range(17)])
    np.savez(tmp_path / "A" / "mine" / "mine.mm.npz", item_id=ids, visual=vectors)
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    np.savez(tmp_path / "B" / "mine" / "mine.mm.npz", item_id=ids, visual=vectors[::-1])
    cell, folder, done = compare_plan(tmp_path, tmp_path / "A", "MMa4CTR")
    fake_ok_record(cell, folder)
    assert set(compare_plan(tmp_path, tmp_path / "A", "MMa4CTR")[2]) == {cell["key"]}
    assert compare_plan(tmp_path, tmp_path / "B", "MMa4CTR")[2] == {}


def test_a_single_run_states_its_identity(tmp_path):
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    write_mine(tmp_path / "data")
    record = run_recbole_mma4ctr("FM", "mine", None, settings_for(tmp_path, tmp_path / "data", epochs=1,
                                                                   train_batch_size=64, log_wandb=False))
    files = tmp_path / "data" / "mine"
    assert record["identity"]["data"] == {name: hashlib.sha256((files / name).read_bytes()).hexdigest()
                                          for name in ("mine.inter", "mine.item")}
    assert record["identity"]["code"] == code_version() and record["identity"]["key"] == record["key"]
    stored = json.loads(Path(record["record_path"]).read_text())
    assert stored["identity"] == record["identity"] and stored["config"]["shuffle"] is True
    # the same key as the driver gives the cell (a plateau run derives values in its config: not counted)
    plateau = run_recbole_mma4ctr("FM", "mine", None, settings_for(tmp_path, tmp_path / "data", train_to="plateau",
                                                                    plateau_step_budget=4, log_wandb=False))
    cell = make_cell("FM", "mine", None, settings_for(tmp_path, tmp_path / "data", train_to="plateau",
                                                      plateau_step_budget=4, log_wandb=False))
    assert plateau["identity"] == cell_identity(cell, cell_config(cell), record["identity"]["data"])


# ------------------------------------------------------------------ 2: a folder the project did not create
def test_a_users_own_wechat_folder_is_read_as_it_is_and_never_written(tiny_atomic, tiny_raw, tmp_path):
    # defect 4: the run generated a sample and converted it INTO D/wechat over the user's files
    source, _ = tiny_atomic
    mine = tmp_path / "D" / "wechat"
    mine.mkdir(parents=True)
    for suffix in ("inter", "item", "mm.npz"):
        shutil.copy(source / f"wechat.{suffix}", mine / f"wechat.{suffix}")
    with open(mine / "wechat.inter", "a") as handle:   # the user's own rows, not the project's
        handle.write("someone\tsomething\t99999\t1\t1\n")
    before = {path.name: path.read_bytes() for path in mine.iterdir()}
    cell = make_cell("MMa4CTR", "wechat", None, settings_for(tmp_path, tmp_path / "D", raw_root=str(tmp_path / "raw"),
                                                              synthetic_root=str(tmp_path / "synthetic")))
    assert sources.ensure_dataset(cell_config(cell)) is None
    assert {path.name: path.read_bytes() for path in mine.iterdir()} == before
    assert not (tmp_path / "synthetic").exists()       # nothing generated either
    with pytest.raises(InputError, match=r"D/wechat: holds files the project did not write \(wechat.inter, "
                                         r"wechat.item, wechat.mm.npz\) and no manifest.json of a conversion"):
        convert(tiny_raw, mine, {"min_user_actions": 0})   # the prepare command refuses it too
    assert {path.name: path.read_bytes() for path in mine.iterdir()} == before
    (mine / "manifest.json").write_text('{"notes": "my own file, not a conversion"}')
    with pytest.raises(InputError, match=r"describes dataset None, not this folder's 'wechat'"):
        sources.ensure_dataset(cell_config(cell))
    (mine / "manifest.json").write_text("[1, 2")
    with pytest.raises(InputError, match=r"D/wechat/manifest.json, line 1: not valid JSON"):
        sources.ensure_dataset(cell_config(cell))
    assert {path.name: path.read_bytes() for path in mine.iterdir() if path.name != "manifest.json"} == before


# ------------------------------------------------------------------ 3: atomic files checked against their manifest
@pytest.fixture
def converted(tiny_raw, tmp_path):
    """tiny raw files as <raw_root>/wechat, converted by the run path into <tmp>/data/wechat."""
    raw_root = tmp_path / "raw"
    raw_root.mkdir()
    (raw_root / "wechat").symlink_to(tiny_raw, target_is_directory=True)
    config = cell_config(make_cell("DIN", "wechat", None, settings_for(tmp_path, tmp_path / "data", raw_root=str(raw_root),
                                                                       min_user_actions=0)))
    manifest = sources.ensure_dataset(config)
    folder = tmp_path / "data" / "wechat"
    return config, manifest, folder, {path.name: path.read_bytes() for path in folder.iterdir()}


def test_the_manifest_records_every_file_size_and_digest(converted):
    _, manifest, folder, files = converted
    assert set(manifest["file_digests"]) == set(manifest["files"]) == set(files) - {"manifest.json"}
    for name, recorded in manifest["file_digests"].items():
        assert recorded == {"bytes": len(files[name]), "sha256": hashlib.sha256(files[name]).hexdigest()}


@pytest.mark.parametrize("edit", ["truncate", "same_size"])
def test_an_atomic_file_changed_by_hand_is_converted_again(converted, capfd, edit):
    # defect 5: a converted wechat.inter cut to fewer rows was 'up to date' and trained on
    config, manifest, folder, files = converted
    inter = folder / "wechat.inter"
    lines = files["wechat.inter"].split(b"\n")
    if edit == "truncate":
        inter.write_bytes(b"\n".join(lines[:100]) + b"\n")
    else:
        inter.write_bytes(files["wechat.inter"].replace(b"\t0\t", b"\t1\t", 1))
        assert inter.stat().st_size == len(files["wechat.inter"]) and inter.read_bytes() != files["wechat.inter"]
    capfd.readouterr()
    again = sources.ensure_dataset(config)
    log = capfd.readouterr().err
    assert "wechat.inter" in log and "converting" in log and "again" in log, log
    assert inter.read_bytes() == files["wechat.inter"] and again["rows"] == manifest["rows"]


def test_without_raw_inputs_a_mismatch_stops_the_run_naming_the_file(converted, tmp_path):
    target = copy_atomic(converted[2], tmp_path / "byo", "mine", manifest=True)
    config = cell_config(make_cell("DIN", "mine", None, settings_for(tmp_path, tmp_path / "byo")))
    assert sources.ensure_dataset(config)["dataset"] == "mine"
    item = target / "mine.item"
    data = item.read_bytes()
    at = data.rindex(b"1")
    item.write_bytes(data[:at] + b"2" + data[at + 1:])          # one digit, same size, still well formed
    with pytest.raises(InputError, match=r"byo/mine/mine.item: its content is not what .*manifest.json records"):
        sources.ensure_dataset(config)
    with open(item, "ab") as handle:
        handle.write(b"extra\t1\t1.0\n")
    with pytest.raises(InputError, match=r"byo/mine/mine.item: [0-9,]+ bytes, but .*manifest.json records"):
        sources.prepared_manifest(config)                      # what a Ray cell checks: no digests, sizes


def test_a_manifest_that_does_not_describe_its_folder_is_refused(converted, tmp_path):
    _, manifest, folder, _ = converted
    target = tmp_path / "byo" / "mine"
    write_mine(tmp_path / "byo")
    shutil.copy(folder / "manifest.json", target / "manifest.json")     # WeChat's manifest in someone's folder
    config = cell_config(make_cell("DIN", "mine", None, settings_for(tmp_path, tmp_path / "byo")))
    with pytest.raises(InputError, match=r"manifest.json: describes dataset 'wechat', not this folder's 'mine'"):
        sources.ensure_dataset(config)
    (target / "manifest.json").write_text('{"dataset": "mine",\n "files": [')            # cut short
    with pytest.raises(InputError, match=r"byo/mine/manifest.json, line 2: not valid JSON") as error:
        sources.ensure_dataset(config)
    assert "\n" not in str(error.value)


def test_an_unlisted_file_of_the_dataset_is_not_taken_for_part_of_it(converted, tmp_path):
    target = copy_atomic(converted[2], tmp_path / "byo", "mine", manifest=True)
    (target / "mine.user").write_text("user_id:token\tage:float\nu1\t3\n")   # RecBole would read it
    config = cell_config(make_cell("DIN", "mine", None, settings_for(tmp_path, tmp_path / "byo")))
    with pytest.raises(InputError, match=r"byo/mine/mine.user: a file of dataset mine that .* does not list"):
        sources.ensure_dataset(config)


def test_temporaries_of_a_killed_conversion_go_even_when_the_rerun_skips(converted, tiny_raw, capfd):
    # defect 11: the temporary files of a killed conversion survived a rerun that skipped as up to date
    config, _, folder, files = converted
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = folder / f".wechat.inter.{int(dead.stdout)}.0123abcd.tmp"
    left.write_bytes(b"partial")
    capfd.readouterr()
    sources.ensure_dataset(config)
    assert "skipping conversion" in capfd.readouterr().err
    assert not left.exists() and {path.name: path.read_bytes() for path in folder.iterdir()} == files


def test_a_commit_interrupted_between_renames_is_converted_again(converted):
    # the manifest goes first, so an interrupted commit leaves a folder that is still the project's
    # (never taken for the user's own files) whose files do not match it
    config, manifest, folder, files = converted
    (folder / "wechat.item").write_bytes(files["wechat.item"][:-20])    # an older, shorter file
    assert atomic.folder_owner(folder) == "converted"
    assert "wechat.item" in atomic.manifest_problem(folder, manifest, "wechat")
    sources.ensure_dataset(config)
    assert (folder / "wechat.item").read_bytes() == files["wechat.item"]
    assert np.load(folder / "wechat.mm.npz")["item_id"].size == manifest["rows"]["items"]


def test_best_yaml_keeps_shuffle(tmp_path):
    # defect 2: best.yaml dropped shuffle with the plumbing, so it did not reproduce the trial
    import yaml

    from recbole_mma4ctr.experiment.tune import write_best_config

    trial = make_cell("DIN", "wechat", None, {"shuffle": "False", "eval_step": 1, "learning_rate": 0.01})
    summary = {"metric": "auc", "best": {"best_auc": 0.6, "best_epoch": 2, "trial": "t1", "status": "completed"}}
    path = write_best_config(tmp_path, summary, trial)
    written = yaml.safe_load(path.read_text())
    assert written["shuffle"] is False and written["learning_rate"] == 0.01
    assert "--model=DIN --dataset=wechat" in path.read_text().splitlines()[1]
