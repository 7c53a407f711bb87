"""What a prepared folder holds and who may write it (issue 10 items 2, 3, 9; issue 11 item 2).

- A committed conversion leaves exactly the files its manifest lists; readers trust only those.
- A generated sample's marker is removed first and written last; two generations of one folder
  share the result (one waits on the lock), a killed one is never taken as complete.
- Temporary files of dead processes are removed by the next writer.
- Converter defaults live in properties/dataset/<name>.yaml only: a change there reaches the
  converter, on the run path and on the command line alike.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from recbole_mma4ctr.prepare import atomic, sources
from recbole_mma4ctr.prepare.synthetic.wechat import GENERATOR_VERSION, write_wechat_raw
from recbole_mma4ctr.prepare.wechat import convert

ORACLE = "wechat.oracle.npy"


def real_copy(tiny_raw: Path, folder: Path) -> Path:
    """The generated files as real data comes: no oracle_prob.csv, no SYNTHETIC.json."""
    folder.mkdir(parents=True)
    for name in ("user_action.csv", "feed_info.csv"):
        (folder / name).symlink_to(tiny_raw / name)
    return folder


# ------------------------------------------------------------------ item 2: the manifest is the folder


def test_a_new_conversion_removes_files_its_manifest_does_not_list(tiny_raw, tmp_path):
    from recbole_mma4ctr.report.comparison import oracle_probabilities

    out = tmp_path / "wechat"
    generated = convert(tiny_raw, out, {"min_user_actions": 0})
    assert ORACLE in generated["files"] and (out / ORACLE).exists()
    record = {"dataset": "wechat", "config": {"data_path": str(out)}}
    predictions = {"timestamp": np.arange(10, dtype=np.float64)}
    assert oracle_probabilities(record, predictions) is not None  # the generated sample's truth
    (out / "notes.txt").write_text("not ours")
    real = convert(real_copy(tiny_raw, tmp_path / "real"), out, {"min_user_actions": 0})
    # before: wechat.oracle.npy stayed, and the comparison scored real data against it
    assert real["files"] == ["wechat.inter", "wechat.item", "wechat.mm.npz"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "notes.txt", *real["files"]]
    assert oracle_probabilities(record, predictions) is None


def test_readers_trust_only_listed_files(tiny_atomic, tmp_path):
    from recbole_mma4ctr.report.comparison import oracle_probabilities

    out = tmp_path / "wechat"
    shutil.copytree(tiny_atomic[0], out)
    assert atomic.listed_file(out, "wechat.inter") == out / "wechat.inter"
    np.save(out / "planted.oracle.npy", np.full(30_000, 0.5, dtype=np.float32))  # put there by hand
    record = {"dataset": "planted", "config": {"data_path": str(out)}}
    assert atomic.listed_file(out, "planted.oracle.npy") is None
    assert oracle_probabilities(record, {"timestamp": np.arange(5.0)}) is None
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "files": manifest["files"] + ["planted.oracle.npy"]}))
    assert oracle_probabilities(record, {"timestamp": np.arange(5.0)}).tolist() == [0.5] * 5
    (out / "manifest.json").unlink()  # a bring-your-own folder: no manifest, nothing listed
    assert atomic.listed_file(out, "wechat.inter") is None


# ------------------------------------------------------------------ item 3: generated samples


def child(code: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


RAW_SOURCE = ("import sys; from recbole_mma4ctr.prepare.sources import raw_source; "
              "print(raw_source('wechat', sys.argv[1], sys.argv[2], 'tiny', 7))")


def test_two_runs_wanting_one_sample_share_it(tiny_raw, tmp_path):
    # before: both generated into the same fixed temp names (feed_info.csv.tmp) and one crashed
    runs = [child(RAW_SOURCE, tmp_path / "dataset", tmp_path / "synthetic") for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    logs = "".join(err for _, err in results)
    assert logs.count("generating a tiny-scale sample") == 1 and "using the generated tiny sample" in logs
    sample = tmp_path / "synthetic" / "wechat"
    for name in ("user_action.csv", "feed_info.csv", "feed_embeddings.csv", "oracle_prob.csv"):
        assert (sample / name).read_bytes() == (tiny_raw / name).read_bytes(), name
    assert sources.synthetic_matches(sample, "tiny", 7)
    assert not [p for p in sample.iterdir() if p.name.endswith(".tmp")]


def test_two_generations_of_one_folder_never_crash(tiny_raw, tmp_path):
    code = "import sys; from recbole_mma4ctr.prepare.synthetic.wechat import write_wechat_raw; write_wechat_raw(sys.argv[1], 'tiny', 7)"
    runs = [child(code, tmp_path / "raw") for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    assert "waiting for another process preparing" in "".join(err for _, err in results)
    assert (tmp_path / "raw" / "user_action.csv").read_bytes() == (tiny_raw / "user_action.csv").read_bytes()
    assert sources.synthetic_matches(tmp_path / "raw", "tiny", 7)


def test_a_generation_killed_midway_is_not_taken_as_a_sample(tmp_path):
    sample = tmp_path / "synthetic" / "wechat"
    write_wechat_raw(sample, scale="tiny", seed=7)
    assert sources.synthetic_matches(sample, "tiny", 7)
    # regenerate with another seed and kill it while it writes (a temporary file is there)
    run = child("import sys; from recbole_mma4ctr.prepare.synthetic.wechat import write_wechat_raw; "
                "write_wechat_raw(sys.argv[1], 'tiny', 8)", sample)
    deadline = time.time() + 120
    while not any(p.name.startswith(".user_action.csv.") for p in sample.iterdir()):
        assert run.poll() is None and time.time() < deadline, run.communicate()
        time.sleep(0.005)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    # before: the old SYNTHETIC.json stayed and vouched for a mix of seed-7 and seed-8 files
    assert not (sample / "SYNTHETIC.json").exists()
    assert not sources.synthetic_matches(sample, "tiny", 7) and not sources.synthetic_matches(sample, "tiny", 8)
    leftovers = [p.name for p in sample.iterdir() if p.name.endswith(".tmp")]
    assert leftovers and all(f".{run.pid}." in name for name in leftovers)
    assert sources.raw_source("wechat", tmp_path / "dataset", tmp_path / "synthetic", "tiny", 7) == sample
    info = json.loads((sample / "SYNTHETIC.json").read_text())
    assert (info["seed"], info["version"]) == (7, GENERATOR_VERSION)
    assert not [p for p in sample.iterdir() if p.name.endswith(".tmp")]  # the dead one's files are gone


def test_two_conversions_of_one_folder_share_the_result(tiny_raw, tmp_path):
    code = ("import sys; from recbole_mma4ctr.prepare.wechat import convert; "
            "print(convert(sys.argv[1], sys.argv[2], {'min_user_actions': 0})['fingerprint'])")
    runs = [child(code, tiny_raw, tmp_path / "wechat") for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    logs = "".join(err for _, err in results)
    assert logs.count("is up to date") == 1 and logs.count("wrote ") == 1  # one converted, the other waited
    assert results[0][0] == results[1][0]
    assert not [p for p in (tmp_path / "wechat").iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ item 9: leftovers of dead processes


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_temporary_files_of_dead_processes_are_removed_by_the_next_conversion(tiny_raw, tmp_path):
    out = tmp_path / "wechat"
    out.mkdir()
    dead = dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old_style = out / f".wechat.inter.{dead}.tmp"              # what converters left before
        new_style = out / f".wechat.mm.npz.{dead}.0123abcd.tmp"
        alive = out / f".wechat.item.{sleeper.pid}.89abcdef.tmp"  # a live process may still write it
        for path in (old_style, new_style, alive):
            path.write_text("partial")
        convert(tiny_raw, out, {"min_user_actions": 0})
        assert not old_style.exists() and not new_style.exists() and alive.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_killed_conversion_leaves_the_old_output_and_no_lasting_temporaries(tiny_raw, tmp_path):
    out = tmp_path / "wechat"
    convert(tiny_raw, out, {"min_user_actions": 0})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = ("import sys; from recbole_mma4ctr.prepare.wechat import convert; "
            "convert(sys.argv[1], sys.argv[2], {'min_user_actions': 5}, force=True)")
    run = child(code, tiny_raw, out)
    deadline = time.time() + 120
    while not any(p.name.endswith(".tmp") for p in out.iterdir()):
        assert run.poll() is None and time.time() < deadline, run.communicate()
        time.sleep(0.005)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.endswith(".tmp")} == before
    convert(tiny_raw, out, {"min_user_actions": 5})
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ issue 11: one source of defaults


@pytest.fixture
def edited_properties(tmp_path, monkeypatch):
    """A copy of properties/ with wechat.yaml's min_user_actions set to 150, used by every reader."""
    from recbole_mma4ctr import settings

    copy = tmp_path / "properties"
    shutil.copytree(settings.properties_dir(), copy)
    yaml_file = copy / "dataset" / "wechat.yaml"
    text = yaml_file.read_text()
    assert "min_user_actions: 100 " in text
    yaml_file.write_text(text.replace("min_user_actions: 100 ", "min_user_actions: 150 "))
    readers = [module for name, module in list(sys.modules.items())
               if name.startswith("recbole_mma4ctr") and getattr(module, "properties_dir", None) is settings.properties_dir]
    for module in readers:   # settings itself and every module that imported properties_dir from it
        monkeypatch.setattr(module, "properties_dir", lambda: copy)
    return copy


def test_a_yaml_default_change_reaches_the_converter(edited_properties, tiny_raw, tmp_path):
    import pandas as pd

    from recbole_mma4ctr.config import build_config
    from recbole_mma4ctr.prepare.__main__ import _parser

    manifest = convert(tiny_raw, tmp_path / "out")  # no settings given: the yaml's apply
    per_user = pd.read_csv(tiny_raw / "user_action.csv", usecols=["userid"])["userid"].value_counts()
    assert manifest["settings"]["min_user_actions"] == 150
    assert manifest["rows"]["users"] == int((per_user >= 150).sum()) < len(per_user)
    assert sources.converter_settings(build_config("MMa4CTR", "wechat"))["min_user_actions"] == 150
    help_text = _parser()._subparsers._group_actions[0].choices["wechat"].format_help()
    assert "default 150" in help_text


def test_a_converter_setting_missing_from_the_yaml_is_named(edited_properties, tiny_raw, tmp_path):
    from recbole_mma4ctr.errors import SettingError

    yaml_file = edited_properties / "dataset" / "wechat.yaml"
    yaml_file.write_text("\n".join(line for line in yaml_file.read_text().split("\n")
                                   if not line.startswith("token_maxlen")))
    with pytest.raises(SettingError, match=r"wechat.yaml: converter setting\(s\) token_maxlen missing"):
        convert(tiny_raw, tmp_path / "out")
