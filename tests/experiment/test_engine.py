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
        "from recbole_mma4ctr.experiment import engine\n"
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


# ---- `ray start` clusters on this machine, token-authenticated -------------------------------------------
def cluster_env(home: Path, token: str) -> dict:
    """What every participant of a test cluster runs with: its own HOME (Ray keeps
    ``~/.ray/auth_token`` there), token authentication on with ``token``, loopback only."""
    return {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _alive_nodes(address: str, env: dict) -> int:
    code = ("import ray; ray.init(address='%s', log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))" % address)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0


# `ray start --address` refuses to join while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is 0 (how the engine
# keeps Ray on loopback), and with it at 1 rewrites 127.0.0.1 into the machine's public address. A
# second node on this machine's loopback therefore runs Ray's own `ray start` with both checks lifted.
# A head that must claim another Ray version sets it before Ray writes the cluster's metadata.
RAY_START = (
    "import os, sys; import ray; import ray._private.ray_constants as c; import ray._private.services as s; "
    "c.ENABLE_RAY_CLUSTER = True; s.resolve_ip_for_localhost = lambda address: address; "
    "ray.__version__ = os.environ.get('CLAIM_RAY_VERSION', ray.__version__); "
    "from ray.scripts.scripts import main; sys.argv = ['ray'] + sys.argv[1:]; main()"
)


def stop_group(process) -> None:
    """Stop one `ray start --block` (and what it started) by its own process group, never `ray stop`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=40)   # `ray start --block` drains for up to 30 s
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextmanager
def ray_head(root: Path, token: str, *, cpus: int, gpus: int = 0, dashboard_port: int | None = None,
             claim_version: str | None = None):
    """A `ray start --head --block` on 127.0.0.1 in its own process group, token-authenticated,
    with its own temporary folder; yields (address, env a participant runs with)."""
    port, home = free_port(), root / "home"
    home.mkdir(exist_ok=True)
    env = cluster_env(home, token)
    temp = tempfile.mkdtemp(prefix="rmc-c-")
    # the job server needs the dashboard's agent, whose HTTP port is 52365 unless given: another Ray on
    # the machine (a user's comparison) holds it, and the agent never starts ("No available agent")
    dashboard = ([f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                  f"--dashboard-agent-listen-port={free_port()}"] if dashboard_port else ["--include-dashboard=false"])
    logs = open(root / "head.log", "w")
    head = subprocess.Popen([sys.executable, "-c", RAY_START, "start", "--head", "--block", f"--port={port}",
                             "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
                             f"--temp-dir={temp}", "--disable-usage-stats", *dashboard],
                            env={**env, **({"CLAIM_RAY_VERSION": claim_version} if claim_version else {})},
                            stdout=logs, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline and not _head_up(address, root / "head.log"):
            assert head.poll() is None, (root / "head.log").read_text()[-3000:]
            time.sleep(1)
        assert _head_up(address, root / "head.log"), (root / "head.log").read_text()[-3000:]
        yield address, env
    finally:
        stop_group(head)
        logs.close()
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


def _head_up(address: str, log: Path) -> bool:
    """`ray start` prints its "Ray runtime started" once the head's services run."""
    return "Ray runtime started" in log.read_text()


@contextmanager
def two_node_cluster(root: Path):
    """A head node with no CPUs (the driver's node: nothing trains there) and a worker node with
    2 CPUs, started in another working directory with its own empty temporary folder: a second
    machine, as far as the driver's files go. Token-authenticated; both stopped by process group."""
    token = os.urandom(16).hex()
    node_home, node_tmp = root / "node2-cwd", Path(tempfile.mkdtemp(prefix="rmc-n2-"))  # short: unix sockets
    node_home.mkdir()
    with ray_head(root, token, cpus=0) as (address, env):
        logs = open(root / "cluster.log", "w")
        # 127.0.0.2: another loopback address, so the driver (127.0.0.1) always attaches to the head
        worker = subprocess.Popen([sys.executable, "-c", RAY_START, "start", "--block", f"--address={address}",
                                   "--node-ip-address=127.0.0.2", "--num-cpus=2", "--num-gpus=0",
                                   "--disable-usage-stats"], cwd=node_home,
                                  env={**env, "TMPDIR": str(node_tmp)}, stdout=logs, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and _alive_nodes(address, env) < 2:
                time.sleep(2)
            assert _alive_nodes(address, env) == 2, (root / "cluster.log").read_text()[-3000:]
            yield address, node_tmp, env
        finally:
            stop_group(worker)
            logs.close()
            import shutil

            shutil.rmtree(node_tmp, ignore_errors=True)


@pytest.mark.slow
def test_compare_and_tune_on_a_cluster_whose_worker_node_lacks_the_drivers_files(tmp_path):
    driver = tmp_path / "driver"
    driver.mkdir()
    with two_node_cluster(tmp_path) as (address, node_tmp, env):
        done = ok(cli(driver, "--compare", "--models=MMa4CTR,BPR", "--marks=1", "--dataset=wechat", TINY,
                      f"--ray_address={address}", env={"RAY_AUTH_TOKEN": env["RAY_AUTH_TOKEN"]}))
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
                      "--epochs=2", "--num_samples=1", env={"RAY_ADDRESS": address,
                                                            "RAY_AUTH_TOKEN": env["RAY_AUTH_TOKEN"]}))
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


# ---- joining clusters: unreachable, refused, another version, tokens, `ray job submit`, logical GPUs -------
def one_error_line(done) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    assert len([line for line in lines if line.startswith("error:")]) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return next(line for line in lines if line.startswith("error:"))


def test_an_address_where_nothing_answers_fails_within_20_s_naming_it(tmp_path):
    address = f"127.0.0.1:{free_port()}"   # nothing listens there
    # the command's own start (importing RecBole and torch: 5 s idle, up to a minute on a loaded
    # 2-core box) is measured apart, with --help, which imports the same and stops
    started = time.time()
    ok(cli(tmp_path, "--compare", "--help", timeout=300))
    start_up = time.time() - started
    started = time.time()
    done = cli(tmp_path, "--compare", "--models=BPR", "--marks=1", "--dataset=wechat", TINY, f"--ray_address={address}",
               timeout=300)
    seconds = time.time() - started
    line = one_error_line(done)
    assert seconds - start_up < 20, f"took {seconds:.0f} s, of which {start_up:.0f} s to start"
    assert address in line and "refused" in line, line
    assert "records say why" not in done.stderr
    assert not (tmp_path / "results" / "compare-wechat-honest" / "comparison.md").exists()


@pytest.mark.slow
def test_a_token_cluster_with_a_logical_gpu_runs_two_half_gpu_cells_at_once_and_refuses_a_wrong_token(tmp_path):
    token = os.urandom(16).hex()
    driver = tmp_path / "driver"
    driver.mkdir()
    with ray_head(tmp_path, token, cpus=2, gpus=1) as (address, env):
        # a wrong token: the join check the engine runs first refuses it within 20 s ...
        wrong = {**env, "RAY_AUTH_TOKEN": "0" * 32}
        started = time.time()
        check = subprocess.run([sys.executable, "-m", "recbole_mma4ctr.experiment.cluster", address], capture_output=True,
                               text=True, timeout=120, env=wrong)
        assert check.returncode == 1 and time.time() - started < 20, (time.time() - started, check.stdout)
        # ... and the command says so in one line naming the address and the reason, before any data
        refused = cli(driver, "--compare", "--models=BPR", "--marks=1", "--dataset=wechat", TINY,
                      f"--ray_address={address}", env={"RAY_AUTH_TOKEN": "0" * 32}, timeout=300)
        line = one_error_line(refused)
        assert address in line and "token from RAY_AUTH_TOKEN" in line and line == "error: " + check.stdout.strip()
        assert not (driver / "dataset").exists() and not (driver / "results").exists()
        # the token from ~/.ray/auth_token (the driver's HOME), as Ray's own rules find it
        (driver / ".ray").mkdir()
        (driver / ".ray" / "auth_token").write_text(token)
        done = ok(cli(driver, "--compare", "--models=MMa4CTR", "--seeds=1,2", "--marks=3", "--dataset=wechat", TINY,
                      "--gpus_per_run=0.5", f"--ray_address={address}"))
        assert f"joined Ray at {address}: 2 CPUs, 1 GPUs" in done.stdout
    found = records(driver / "results" / "compare-wechat-honest")
    assert len(found) == 2 and all(r["status"] == "ok" for r in found)
    for record in found:
        place = record["where"]
        assert place["ray_gpu_ids"] == ["0"] and place["cuda_visible_devices"] == "0", place
        assert "torch sees no CUDA device: ran on the CPU" in place["gpu_fallback"]
        assert record["device"].startswith("cpu")
    first, second = sorted(found, key=lambda r: r["started_at"])
    assert second["started_at"] < first["finished_at"], "the two half-GPU cells did not overlap in time"


@pytest.mark.slow
def test_a_cluster_of_another_ray_version_is_refused_naming_both_versions(tmp_path):
    import ray

    token = os.urandom(16).hex()
    with ray_head(tmp_path, token, cpus=1, claim_version="2.41.0") as (address, env):
        done = cli(tmp_path, "--compare", "--models=BPR", "--marks=1", "--dataset=wechat", TINY,
                   f"--ray_address={address}", env={"RAY_AUTH_TOKEN": token}, timeout=180)
    line = one_error_line(done)
    assert address in line and "Ray 2.41.0" in line and f"Ray {ray.__version__}" in line, line


@pytest.mark.slow
def test_ray_job_submit_runs_a_comparison_on_a_token_cluster(tmp_path):
    token = os.urandom(16).hex()
    dashboard = free_port()
    work = tmp_path / "job"
    work.mkdir()
    with ray_head(tmp_path, token, cpus=2, dashboard_port=dashboard) as (address, env):
        entrypoint = (f"cd {work} && {sys.executable} {REPO / 'run_recbole_mma4ctr.py'} --compare --models=BPR,FM "
                      f"--marks=1 --dataset=wechat {TINY}")
        deadline = time.time() + 120
        not_ready = ("Connection", "No available agent")   # the job server, then its agent, answer after the head
        while True:
            done = subprocess.run([RAY, "job", "submit", f"--address=http://127.0.0.1:{dashboard}", "--",
                                   "bash", "-c", entrypoint], capture_output=True, text=True, timeout=600, env=env)
            said = done.stderr + done.stdout
            if done.returncode == 0 or time.time() > deadline or not any(text in said for text in not_ready):
                break
            time.sleep(2)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"joined Ray at {address}" in done.stdout, done.stdout[-3000:]   # RAY_ADDRESS, set by the job
    summary = json.loads((work / "results" / "compare-wechat-honest" / "comparison.json").read_text())
    assert {row["model"]: row["status"] for row in summary["rows"] if "oracle" not in row["model"]} == \
        {"BPR": "ok", "FM": "ok"}
