"""The engine on a real Ray: loopback only, a `ray start` cluster whose worker node lacks the
driver's files, a killed worker retried from its checkpoint, an interrupted driver resumed."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import REPO, remove_ray_temp

pytestmark = pytest.mark.ray  # the numpy-2 CI environment has no Ray

TINY = "--synthetic_scale=tiny"
# compare's closing line, the whole line: "[compare] 2 cell(s), 0 failed; 41 s" (not "... 10 failed")
COMPARE_DONE = r"^\[compare\] {cells} cell\(s\), {failed} failed; \d+ s$"
RAY = str(Path(sys.executable).parent / "ray")


def cli(workdir, *arguments, timeout=600, env=None):
    command = [sys.executable, str(REPO / "run_recbole_mma4ctr.py"), *arguments]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HOME": str(workdir), **(env or {})})


def ok(done):
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def records(folder: Path) -> list[dict]:
    from recbole_mma4ctr.record import records_in

    return records_in(folder)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listeners_of(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets listening in the given processes (from ``ss -ltnp``)."""
    done = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30)
    found = []
    for line in done.stdout.splitlines():
        owners = {int(part.split("=")[1]) for part in line.replace(")", ",").split(",") if part.startswith("pid=")}
        if owners & pids:
            found.append(line.split()[3])
    return found


def test_a_local_cluster_listens_on_loopback_only(tmp_path):
    script = (
        "import json, os, pathlib, psutil\n"
        "from recbole_mma4ctr import engine\n"
        "options = engine.parse_options({})\n"
        "print(engine.start_ray(pathlib.Path(os.environ['FOLDER']), options), flush=True)\n"
        "import ray\n"
        "ray.get([ray.remote(lambda: 1).remote() for _ in range(2)])\n"
        "pids = [p.pid for p in psutil.Process().children(recursive=True)]\n"
        "print('PIDS', json.dumps(pids), flush=True)\n"
        "input()\n"
        "engine.stop_ray()\n"
    )
    folder = Path(tempfile.mkdtemp(prefix="rmc-l-"))
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "FOLDER": str(folder)}, start_new_session=True)
    try:
        pids = None
        for line in child.stdout:
            if line.startswith("PIDS "):
                pids = set(json.loads(line[5:]))
                break
        assert pids, "the cluster did not start"
        addresses = listeners_of(pids | {child.pid})
        assert addresses, "no listening socket seen: the check would pass vacuously"
        outside = [a for a in addresses if not (a.startswith("127.") or a.startswith("[::1]") or "127.0.0.1" in a)]
        assert not outside, f"Ray listens beyond loopback: {outside}"
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        remove_ray_temp(folder)


# ---- a two-node `ray start` cluster on this machine ------------------------------------------------------
def _alive_nodes(address: str) -> int:
    code = ("import ray; ray.init(address='%s', log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))" % address)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0


# `ray start --address` refuses to join while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is 0 (how the engine
# keeps Ray on loopback), and with it at 1 rewrites 127.0.0.1 into the machine's public address. A
# second node on this machine's loopback therefore runs Ray's own `ray start` with both checks lifted.
JOIN_ON_LOOPBACK = (
    "import sys; import ray._private.ray_constants as c; import ray._private.services as s; "
    "c.ENABLE_RAY_CLUSTER = True; s.resolve_ip_for_localhost = lambda address: address; "
    "from ray.scripts.scripts import main; sys.argv = ['ray'] + sys.argv[1:]; main()"
)


@contextmanager
def two_node_cluster(root: Path):
    """A head node with no CPUs (the driver's node: nothing trains there) and a worker node with
    2 CPUs, started in another working directory with its own empty temporary folder: a second
    machine, as far as the driver's files go. Both are stopped by process group, never `ray stop`."""
    port = free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="rmc-c-")
    node_home, node_tmp = root / "node2-cwd", Path(tempfile.mkdtemp(prefix="rmc-n2-"))  # short: unix sockets
    node_home.mkdir()
    logs = open(root / "cluster.log", "w")
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=0", "--num-gpus=0", f"--temp-dir={temp}", "--include-dashboard=false",
                             "--disable-usage-stats"], env=env, stdout=logs, stderr=subprocess.STDOUT,
                            start_new_session=True)
    processes = [head]
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline and _alive_nodes(address) < 1:
            time.sleep(2)
        # 127.0.0.2: another loopback address, so the driver (127.0.0.1) always attaches to the head
        worker = subprocess.Popen([sys.executable, "-c", JOIN_ON_LOOPBACK, "start", "--block", f"--address={address}",
                                   "--node-ip-address=127.0.0.2", "--num-cpus=2", "--num-gpus=0",
                                   "--disable-usage-stats"], cwd=node_home,
                                  env={**env, "TMPDIR": str(node_tmp)}, stdout=logs, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        processes.append(worker)
        while time.time() < deadline and _alive_nodes(address) < 2:
            time.sleep(2)
        assert _alive_nodes(address) == 2, (root / "cluster.log").read_text()[-3000:]
        yield address, node_tmp
    finally:
        for process in reversed(processes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        logs.close()
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(node_tmp, ignore_errors=True)


@pytest.mark.slow
def test_compare_and_tune_on_a_cluster_whose_worker_node_lacks_the_drivers_files(tmp_path):
    driver = tmp_path / "driver"
    driver.mkdir()
    with two_node_cluster(tmp_path) as (address, node_tmp):
        done = ok(cli(driver, "--compare", "--models=MMa4CTR,BPR", "--marks=1", "--dataset=wechat", TINY,
                      f"--ray_address={address}"))
        assert f"joined Ray at {address}" in done.stdout
        folder = driver / "results" / "compare-wechat-honest"
        summary = json.loads((folder / "comparison.json").read_text())
        assert {row["model"]: row["status"] for row in summary["rows"] if "oracle" not in row["model"]} == \
            {"MMa4CTR": "ok", "BPR": "ok"}
        found = records(folder)
        assert len(found) == 2
        nodes = {record["where"]["ray_node_id"] for record in found}
        assert len(nodes) == 1 and None not in nodes
        # the cells ran on the worker node, which got the data through the object store ...
        shipped = list(node_tmp.glob("rmc-data/wechat-*/wechat/wechat.inter"))
        assert shipped, "the worker node never unpacked the shipped data"
        assert all(r["config"]["data_path"].startswith(str(node_tmp)) for r in found)
        # ... and never generated or converted data of its own
        assert not (tmp_path / "node2-cwd" / "dataset").exists() and not (tmp_path / "node2-cwd" / "dataset_atomic").exists()
        # a 2-trial tune against the same cluster, named by RAY_ADDRESS (as `ray job submit` does)
        (driver / "tiny.hyper").write_text("learning_rate grid [0.001,0.003]\n")
        done = ok(cli(driver, "--tune", "--model=MMa4CTR", "--dataset=wechat", "--params_file=tiny.hyper", TINY,
                      "--epochs=2", "--num_samples=1", env={"RAY_ADDRESS": address}))
        assert f"joined Ray at {address}" in done.stdout
        tune_folder = driver / "results" / "tune-MMa4CTR-wechat"
        summary = json.loads((tune_folder / "trials.json").read_text())
        assert len(summary["trials"]) == 2 and summary["best"] is not None
        assert all(t["status"] in ("completed", "early-stopped (validation)", "stopped by ASHA") for t in summary["trials"])
        assert (tune_folder / "best.yaml").exists()


def _wait_for_checkpoint(folder: Path, cell: str, epochs: int, child, timeout=300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert child.poll() is None, "the command ended before the cell could be interrupted"
        try:
            progress = json.loads((folder / "progress.json").read_text())
        except (OSError, json.JSONDecodeError):
            progress = {}
        for entry in progress.values():
            if entry.get("cell") == cell and entry.get("state") == "running" and entry.get("checkpointed", 0) >= epochs:
                return entry
        time.sleep(0.2)
    raise AssertionError(f"{cell} never checkpointed {epochs} epoch(s)")


@pytest.mark.slow
def test_a_killed_worker_is_retried_from_its_checkpoint_and_an_interrupted_driver_resumes(tmp_path):
    marks = "--marks=10,40"
    reference_dir, work = tmp_path / "reference", tmp_path / "work"
    reference_dir.mkdir()
    work.mkdir()
    # an uninterrupted run of the same cell, for the numbers the resumed one must reproduce
    ok(cli(reference_dir, "--compare", "--models=MMa4CTR", marks, "--dataset=wechat", TINY, "--cpus_per_run=2"))
    reference = records(reference_dir / "results" / "compare-wechat-honest")[0]

    command = [sys.executable, str(REPO / "run_recbole_mma4ctr.py"), "--compare", "--models=MMa4CTR,FM", marks,
               "--dataset=wechat", TINY, "--cpus_per_run=2"]
    folder = work / "results" / "compare-wechat-honest"
    log = open(work / "first.log", "w")
    child = subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(work)},
                             start_new_session=True)
    try:
        # 1. kill the worker process of the running cell after its third checkpoint
        first = _wait_for_checkpoint(folder, "MMa4CTR", 3, child)
        os.kill(first["pid"], signal.SIGKILL)
        # 2. once the retried cell has checkpointed again, stop the driver itself (as Ctrl-C would)
        deadline = time.time() + 300
        while time.time() < deadline:
            progress = json.loads((folder / "progress.json").read_text())
            entry = next(e for e in progress.values() if e.get("cell") == "MMa4CTR")
            if entry.get("attempt", 1) >= 2 and entry.get("state") == "running" and entry.get("checkpointed", 0) >= 6:
                break
            assert child.poll() is None, (work / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        else:
            raise AssertionError("the killed cell was not retried")
        assert entry["pid"] != first["pid"]
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        log.close()
    assert child.returncode != 0
    assert not [r for r in records(folder) if r["cell"] == "MMa4CTR"], "the interrupted cell must have no record"
    checkpointed = entry["checkpointed"]
    # 3. the same command again: the cell resumes from its last checkpoint on disk and finishes
    again = ok(cli(work, *command[2:]))
    assert re.search(COMPARE_DONE.format(cells=2, failed=0), again.stdout, re.M), again.stdout[-3000:]
    resumed = next(r for r in records(folder) if r["cell"] == "MMa4CTR" and r["status"] == "ok")
    assert resumed["resumed_from_epoch"] >= checkpointed
    assert resumed["epochs_run"] == 40 and [t["epoch"] for t in resumed["test_by_epoch"]] == list(range(1, 41))
    # resuming restores weights, optimizer, schedule, RNG and shuffling: the numbers are the same
    assert resumed["test"]["auc"] == pytest.approx(reference["test"]["auc"], abs=1e-4)
    assert resumed["test_by_epoch"][-1]["auc"] == pytest.approx(reference["test_by_epoch"][-1]["auc"], abs=1e-4)
    table = json.loads((folder / "comparison.json").read_text())
    assert {row["model"]: row["status"] for row in table["rows"] if "oracle" not in row["model"]} == \
        {"MMa4CTR": "ok", "FM": "ok"}
