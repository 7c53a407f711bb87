"""The experiment engine: runs many cells (``run.run_cell``) on Ray, on one machine or a cluster.

``--compare``, ``--study`` and ``--tune`` all come here; a single run never does (and never
imports ray). What the engine guarantees:

- One cluster choice: a local Ray bound to 127.0.0.1 only (its GCS, raylet and workers listen on
  loopback, see ``start_ray``), or an existing cluster named by ``--ray_address=HOST:PORT`` or the
  ``RAY_ADDRESS`` variable (joining one is the user's explicit choice). ``--cpus_per_run`` and
  ``--gpus_per_run`` (fractions allowed) size every cell; Ray runs as many at once as fit.
- One driver per results folder: the command holds a lock on ``<folder>/.driver.lock``; a
  second command on the same folder stops at once, naming the folder and the holder's pid
  (``claim_folder``).
- Data are prepared by the driver, once per data folder (cells that vary a data setting, such as
  a study over ``text_recipe``, each get the folder of their variant: ``split_data_variants``),
  and reach the workers through Ray's object store: a
  cell on another node writes the shipped atomic files to its own temporary folder (once per
  node, under a lock) and never generates or converts data itself. On the driver's node the
  driver's folder is read directly.
- Results come back through Ray: a ``Ledger`` actor pinned to the driver's node receives every
  cell's record and predictions and writes them with ``record.write_record`` into the results
  folder (failures too), as soon as each cell ends. It also keeps each cell's latest checkpoint
  (in memory and in ``<folder>/checkpoints/``) and its progress (``<folder>/progress.json``:
  which cells run where, at which epoch, which finished or failed).
- Faults: every cell checkpoints after each epoch. When its worker process or node dies, Ray Tune
  retries it (``--max_failures``, default 2) and it resumes from its last checkpoint on whatever
  node it lands. An interrupted driver resumes with the same command: finished cells (a record
  with the same resume key in the folder) are skipped and unfinished ones resume from their
  checkpoints on disk. A Python error inside a cell is recorded as that cell's failure and not
  retried (it would fail the same way).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..cells import cell_config
from ..errors import CellError, FolderBusyError
from ..files import move_into_place, try_lock, write_bytes, write_text
from ..prepare.sources import converter_settings, CONVERTERS, data_digests, ensure_dataset, SOURCE_SETTINGS
from ..record import ended_record, failure_record, latest_by_key, read_record, records_in, where, write_record
from ..resume_key import cell_identity
from ..run import run_cell, say
from ..settings import command_options, tooling
from .cluster import check_join, ClusterError, join, ray_environment

SOCKET_DEPTH = 67          # characters Ray adds below its temporary folder for its socket files
SOCKET_LIMIT = 107         # AF_UNIX path limit
DEFAULT_OPTIONS = command_options("engine")   # properties/commands.yaml
ENGINE_OPTIONS = tuple(DEFAULT_OPTIONS)
DRIVER_LOCK = ".driver.lock"   # in a results folder: held by the one command driving it (claim_folder)
_CLAIMED: dict = {}            # results folder -> the open lock file this process holds


# ---- options and resources -------------------------------------------------------------------------
@dataclass
class EngineOptions:
    cpus_per_run: float
    gpus_per_run: float
    address: str | None
    temp_dir: str | None
    max_failures: int


def parse_options(options: dict) -> EngineOptions:
    options = {**tooling("engine"), **{k: v for k, v in (options or {}).items() if v is not None}}
    try:
        cpus, gpus = float(options["cpus_per_run"]), float(options["gpus_per_run"])
        max_failures = int(options["max_failures"])
    except ValueError:
        raise CellError("--cpus_per_run and --gpus_per_run take numbers (fractions allowed), --max_failures a whole "
                        "number") from None
    if cpus <= 0 or gpus < 0 or max_failures < 0:
        raise CellError("--cpus_per_run must be > 0, --gpus_per_run >= 0 and --max_failures >= 0")
    if gpus > 1 and not gpus.is_integer():
        raise CellError("--gpus_per_run above 1 must be a whole number (Ray only splits a single GPU)")
    address = options["ray_address"] or os.environ.get("RAY_ADDRESS") or None
    return EngineOptions(cpus, gpus, address, options["ray_tmp"], max_failures)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_local_resources(options: EngineOptions) -> None:
    """Refuse up front what would leave cells PENDING forever on a local cluster; for a cluster
    named by address, one this process cannot join (``cluster.check_join``, before any data is
    prepared)."""
    if options.address:
        check_join(options.address)
        return
    cores, gpus = available_cores(), visible_gpus()
    if options.gpus_per_run > 0 and gpus == 0:
        raise CellError(f"--gpus_per_run={options.gpus_per_run:g} but this machine has no usable CUDA GPU "
                        f"(torch.cuda.device_count() is 0): Ray would keep every cell PENDING forever. "
                        f"Use --gpus_per_run=0, or --ray_address= of a cluster with GPUs.")
    if options.gpus_per_run > gpus > 0:
        raise CellError(f"--gpus_per_run={options.gpus_per_run:g} but this machine has {gpus} GPU(s)")
    if options.cpus_per_run > cores:
        raise CellError(f"--cpus_per_run={options.cpus_per_run:g} but this machine has {cores} core(s)")


def check_cluster_resources(options: EngineOptions) -> None:
    """On a joined cluster: some node must hold one cell's CPUs and GPUs, or cells never start."""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    fits = [n for n in nodes if n.get("CPU", 0) >= options.cpus_per_run and n.get("GPU", 0) >= options.gpus_per_run]
    if not fits:
        most = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
        raise CellError(f"no node of the cluster at {options.address} has {options.cpus_per_run:g} CPU(s) and "
                        f"{options.gpus_per_run:g} GPU(s) for one cell (largest node: {most[0]:g} CPUs, "
                        f"{most[1]:g} GPUs); cells would stay PENDING forever")


# ---- the cluster -------------------------------------------------------------------------------------
def ray_temp_dir(folder: Path, requested: str | None = None) -> str:
    """A Ray temporary folder whose socket paths fit the unix limit: ``<folder>/rt`` when short
    enough, else ``/tmp/rmc-<hash of the folder>`` with ``<folder>/rt`` a link to it."""
    if requested:
        path = Path(requested).resolve()
        if len(str(path)) + SOCKET_DEPTH > SOCKET_LIMIT:
            raise CellError(f"--ray_tmp={path} is too long for Ray's unix sockets: keep it within "
                            f"{SOCKET_LIMIT - SOCKET_DEPTH} characters")
        path.mkdir(parents=True, exist_ok=True)
        return str(path)
    inside = folder.resolve() / "rt"
    if len(str(inside)) + SOCKET_DEPTH <= SOCKET_LIMIT:
        if inside.is_symlink():
            inside.unlink()
        inside.mkdir(parents=True, exist_ok=True)
        return str(inside)
    short = Path(tempfile.gettempdir()) / f"rmc-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]}"
    short.mkdir(parents=True, exist_ok=True)
    if inside.is_symlink() or not inside.exists():
        if inside.is_symlink():
            inside.unlink()
        inside.symlink_to(short, target_is_directory=True)
    return str(short)


def start_ray(folder: Path, options: EngineOptions) -> str:
    """Start a local Ray on 127.0.0.1 (or join ``options.address``); returns a one-line description.

    Both use Ray's token authentication: joining, the token Ray's own rules find (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``) is sent; a local cluster is started with token
    authentication on (Ray writes ``~/.ray/auth_token`` when there is none)."""
    ray_environment(options.address)
    import ray

    if options.address:
        join(options.address)
        check_cluster_resources(options)
        total = ray.cluster_resources()
        return f"joined Ray at {options.address}: {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs"
    temp_dir = ray_temp_dir(folder, options.temp_dir)
    cores, gpus = available_cores(), visible_gpus()
    ray.init(num_cpus=cores, num_gpus=gpus, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    return f"started a local Ray on 127.0.0.1: {cores} CPUs, {gpus} GPUs, temporary files in {temp_dir}"


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


# ---- data: prepared once by the driver, shipped through the object store -----------------------------
def pack_folder(folder: Path) -> bytes:
    """The atomic dataset folder as an uncompressed tar (its files only, no subfolders)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(Path(folder).iterdir()):
            if path.is_file() and not path.name.startswith("."):
                archive.add(path, arcname=path.name)
    return buffer.getvalue()


def ship_data(data_path: str, dataset: str) -> dict:
    """What a cell needs to find the prepared data: the driver's node and folder, and the files
    (``fingerprint``, a hash of them, names the copy a node unpacks)."""
    import ray

    atomic = Path(data_path).resolve()
    payload = pack_folder(atomic)
    return {"dataset": dataset, "driver_node": ray.get_runtime_context().get_node_id(),
            "driver_root": str(atomic.parent), "fingerprint": hashlib.sha256(payload).hexdigest()[:16],
            "files": ray.put(payload), "bytes": len(payload)}


def materialize(shipment: dict) -> str:
    """The data root (``data_path``) a cell on this node reads: the driver's folder on the driver's
    node, else the shipped files unpacked once into this node's temporary folder."""
    import fcntl

    import ray

    if ray.get_runtime_context().get_node_id() == shipment["driver_node"] and Path(shipment["driver_root"]).exists():
        return shipment["driver_root"]
    root = Path(tempfile.gettempdir()) / "rmc-data" / f"{shipment['dataset']}-{shipment['fingerprint']}"
    target = root / shipment["dataset"]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
            payload = ray.get(shipment["files"])
            with tarfile.open(fileobj=io.BytesIO(payload), mode="r") as archive:
                archive.extractall(staging, filter="data")
            write_text(staging / ".complete", str(len(payload)))
            if target.exists():
                import shutil

                shutil.rmtree(target)
            move_into_place(staging, target)
    return str(root)


# ---- the ledger: records, checkpoints and progress, on the driver's node -----------------------------
class LedgerImpl:
    """Receives every cell's checkpoints, progress and final record; writes them in the driver's
    results folder (Ray runs it as an actor pinned to the driver's node)."""

    def __init__(self, folder: str, names: dict):
        self.folder = Path(folder)
        self.checkpoints = self.folder / "checkpoints"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.names = dict(names)            # key -> cell name
        self.progress = {key: {"cell": name, "state": "pending"} for key, name in self.names.items()}
        self.last: dict = {}
        self._write_progress()

    def started(self, key: str, place: dict) -> None:
        entry = self.progress.setdefault(key, {"cell": self.names.get(key, key)})
        entry.update(state="running", attempt=int(entry.get("attempt", 0)) + 1, since=time.time(), **place)
        self._write_progress()

    def save_checkpoint(self, key: str, epoch: int, blob: bytes, report: dict) -> None:
        write_bytes(self.checkpoints / f"{key}.ckpt", blob)
        self.progress.setdefault(key, {"cell": self.names.get(key, key)}).update(epoch=int(epoch), checkpointed=int(epoch))
        self.last[key] = report
        self._write_progress()

    def load_checkpoint(self, key: str):
        path = self.checkpoints / f"{key}.ckpt"
        return path.read_bytes() if path.exists() else None

    def finish(self, key: str, record: dict, predictions: dict | None) -> str:
        path = write_record(record, self.folder, predictions)
        self.progress.setdefault(key, {}).update(state=record["status"], record=path.name,
                                                 error=record.get("error"))
        if record["status"] == "ok":
            (self.checkpoints / f"{key}.ckpt").unlink(missing_ok=True)
        self._write_progress()
        return str(path)

    def last_report(self, key: str):
        return self.last.get(key)

    def state(self) -> dict:
        return dict(self.progress)

    def _write_progress(self) -> None:
        write_bytes(self.folder / "progress.json", json.dumps(self.progress, indent=2, default=str).encode())


class LedgerCheckpoints:
    """``run_cell``'s checkpoint sink for a cell on Ray: the ledger keeps the latest one."""

    def __init__(self, ledger, key: str):
        self.ledger, self.key = ledger, key
        self.report: dict = {}

    def load(self):
        import ray

        return ray.get(self.ledger.load_checkpoint.remote(self.key))

    def save(self, epoch: int, blob: bytes) -> None:
        import ray

        ray.get(self.ledger.save_checkpoint.remote(self.key, epoch, blob, self.report))


def start_ledger(folder: Path, names: dict):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor = ray.remote(num_cpus=0)(LedgerImpl).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False), max_restarts=0)
    return actor.remote(str(folder), names)


# ---- one cell inside a Ray trial ------------------------------------------------------------------
def worker_setup() -> None:
    """What every cell needs in its own worker process (driver patches do not reach it); its
    torch threads come from the cell's ``torch_threads`` (``int(cpus_per_run)``), set by run_cell."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\.|$)")


def gpu_assignment(gpus_per_run: float) -> dict:
    """What Ray gave this cell (its GPU ids, the ``CUDA_VISIBLE_DEVICES`` it set in the worker)
    and, when it gave a GPU that torch cannot see (a logical GPU, a missing driver), that the
    cell runs on the CPU instead: the record says so."""
    if gpus_per_run <= 0:
        return {}
    import ray
    import torch

    given = {"ray_gpu_ids": [str(i) for i in ray.get_gpu_ids()],
             "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if not torch.cuda.is_available():
        given["gpu_fallback"] = (f"Ray gave GPU(s) {','.join(given['ray_gpu_ids']) or '-'} (CUDA_VISIBLE_DEVICES="
                                 f"{given['cuda_visible_devices']}) but torch sees no CUDA device: ran on the CPU")
    return given


def cell_trainable(params: dict, setup: dict) -> None:
    """Ray Tune function trainable: one cell (``params['cell']`` names it: a comparison cell, a
    study point or a tune trial), run by ``run_cell``; reports validation after every epoch and
    returns nothing (Ray 2.6.3 takes a returned dict for one more result, without the metric,
    and aborts the trial)."""
    import ray
    from ray import tune


    worker_setup()
    cell = dict(setup["cells"][params["cell"]])
    shipment = setup["shipments"].get(cell.get("data_root"), setup["data"])
    cell["settings"] = dict(cell["settings"])
    key, ledger = cell["key"], setup["ledger"]
    gpus = setup["gpus_per_run"]
    cell["settings"].update({
        "data_path": materialize(shipment),
        "checkpoint_dir": str(Path(tune.get_context().get_trial_dir()) / "saved"),
        "gpu_id": ",".join(str(int(i)) for i in ray.get_gpu_ids()) if gpus > 0 else "",
        "torch_threads": max(1, int(setup["cpus_per_run"])),
        "show_progress": False,
    })
    cell["prepare"] = False
    gpu = gpu_assignment(gpus)
    ray.get(ledger.started.remote(key, {**where(), **gpu}))
    sink = LedgerCheckpoints(ledger, key)
    metric = setup.get("metric")

    def on_epoch(progress):
        entry = progress["entry"]
        report = {**{k: float(v) for k, v in (entry.get("valid") or {}).items()}, "epoch": progress["epoch"],
                  "train_loss": float(entry.get("train_loss", float("nan"))), "cell_key": key}
        if progress["test"]:
            report.update({f"test_{k}": v for k, v in progress["test"].items() if isinstance(v, float)})
        sink.report = {"epoch": progress["epoch"], "entry": entry}
        if progress["epoch"] >= progress["epochs"]:
            final["report"] = report    # reported after the record is safe: a scheduler stops a trial
            return False                # at its last rung, which would cut the final test short
        if metric is None or metric in report:
            tune.report(report)
        return False

    final: dict = {}
    started = time.time()
    try:
        record, predictions = run_cell(cell, on_epoch=on_epoch, checkpoints=sink)
    except Exception as error:  # noqa: BLE001 - recorded as this cell's failure, then the grid goes on
        quiet = f"{type(error).__name__}: {error}"
        ray.get(ledger.finish.remote(key, failure_record(cell, quiet, time.time() - started), None))
        tune.report({"failed": 1, "epoch": 0, "cell_key": key, **({metric: float("nan")} if metric else {})})
        return
    record["where"].update(gpu)
    ray.get(ledger.finish.remote(key, record, predictions))
    if final and (metric is None or metric in final["report"]):
        tune.report(final["report"])


# ---- the driver ---------------------------------------------------------------------------------
def run_cells(label: str, cells: list[dict], config, folder: Path, options: EngineOptions, tune_spec=None) -> dict:
    """Run ``cells`` on Ray (with ``tune_spec``, a tune's trials: ``metric``, ``mode`` and the
    ``scheduler`` that may stop them early); returns every cell's record by key (they are in ``folder`` already, written by the ledger).

    The Ray driver runs in a child process of its own: Ray 2.6's driver side (its gRPC threads,
    the shutdown) can crash a process on a busy machine after every cell is done, and the records
    are on disk by then, so this process reads them and goes on to the tables. Ctrl-C or SIGTERM
    here stops the child, which stops the cluster it started."""
    import multiprocessing

    # every data folder the cells read (prepare_grid gives each cell its own), else the config's
    roots = list(dict.fromkeys(cell["data_root"] for cell in cells if cell.get("data_root"))) or [str(config["data_path"])]
    ray_environment(options.address)      # read by Ray when the driver process imports it
    context = multiprocessing.get_context("spawn")
    refusals, refusal_sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_drive, args=(label, cells, roots, str(config["dataset"]), str(folder), options,
                             tune_spec, refusal_sender), name=f"rmc-{label}-driver")
    child.start()
    refusal_sender.close()
    try:
        child.join()
    except BaseException:
        child.terminate()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
        raise
    refusal = _received(refusals)
    if refusal:
        raise ClusterError(refusal)    # the cluster could not be started or joined: nothing ran
    try:
        state = json.loads((folder / "progress.json").read_text())
    except (OSError, json.JSONDecodeError):
        state = {}
    if child.exitcode != 0:
        say(f"[{label}] the Ray driver process ended with status {child.exitcode}; using the records it left")
    return {key: read_record(folder / entry["record"]) for key, entry in state.items()
            if entry.get("record") and (folder / entry["record"]).exists()}


def _received(connection) -> str | None:
    """What the driver process sent (only a refusal is ever sent); None when it sent nothing
    (its end of the pipe closed at exit reads as end of file)."""
    try:
        return connection.recv() if connection.poll() else None
    except EOFError:
        return None


def _drive(label: str, cells: list[dict], data_roots: list[str], dataset: str, folder: str, options: EngineOptions,
           tune_spec, refusals) -> None:
    """The Ray driver (in its own process, see ``run_cells``): start or join the cluster, ship
    the data (each of ``data_roots``, the atomic folders the cells read), run the trials, record
    what the trials could not (``collect``), stop the cluster. A cluster that cannot be started or
    joined is sent back through ``refusals`` as one line."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    from ray import tune

    folder = Path(folder)
    names = {cell["key"]: cell["cell"] for cell in cells}
    try:
        say(f"[{label}] {start_ray(folder, options)}")
    except (CellError, ClusterError) as error:
        refusals.send(str(error))
        stop_ray()
        return
    try:
        ledger = start_ledger(folder, names)
        shipments = {root: ship_data(root, dataset) for root in data_roots}
        data = shipments[data_roots[0]]
        say(f"[{label}] data {data['dataset']} ({len(shipments)} folder(s), "
            f"{sum(s['bytes'] for s in shipments.values()) / 1e6:.1f} MB) shipped through Ray's object store; "
            f"{options.cpus_per_run:g} CPU(s) and {options.gpus_per_run:g} GPU(s) a run, "
            f"up to {options.max_failures} retries of a cell whose worker dies")
        setup = {"cells": {cell["cell"]: cell for cell in cells}, "ledger": ledger, "data": data,
                 "shipments": shipments, "cpus_per_run": options.cpus_per_run, "gpus_per_run": options.gpus_per_run}
        param_space = {"cell": tune.grid_search([cell["cell"] for cell in cells])}
        if tune_spec is None:
            tune_config = tune.TuneConfig(num_samples=1)
        else:   # a tune's trials: cells too, reporting the ranked metric to the scheduler (ASHA)
            setup["metric"] = tune_spec["metric"]
            tune_config = tune.TuneConfig(metric=tune_spec["metric"], mode=tune_spec["mode"],
                                          scheduler=tune_spec["scheduler"], num_samples=1)
        trainable = tune.with_resources(tune.with_parameters(cell_trainable, setup=setup),
                                        {"cpu": options.cpus_per_run, "gpu": options.gpus_per_run})
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                           run_config=tune.RunConfig(name=f"{label}-{time.strftime('%Y%m%d-%H%M%S')}",
                                                     storage_path=str(folder / "ray"), log_to_file=True, verbose=0,
                                                     callbacks=[_progress_callback(label)],
                                                     failure_config=tune.FailureConfig(max_failures=options.max_failures)))
        collect(tuner.fit(), ledger, setup, folder)
    finally:
        stop_ray()


def collect(grid, ledger, setup: dict, folder: Path) -> dict:
    """Every cell's record by key, after the trials: those the cells wrote, plus a ``failed``
    record for a cell whose worker died more often than allowed and a ``stopped`` one for a
    trial the scheduler ended (with its last validation)."""
    import ray

    state = ray.get(ledger.state.remote())
    records = {key: read_record(folder / entry["record"]) for key, entry in state.items() if entry.get("record")}
    for result in grid:
        cell, metrics = dict(setup["cells"][(result.config or {})["cell"]]), dict(result.metrics or {})
        key = cell["key"]
        if key in records:
            continue
        entry = state.get(key, {})
        if result.error is not None:
            record = failure_record(cell, _error_line(result.error))
            record["attempts"] = entry.get("attempt")
        else:
            last = ray.get(ledger.last_report.remote(key))
            record = ended_record(cell, "stopped", epochs_run=metrics.get("epoch", 0),
                                  history=[last["entry"]] if last else [],
                                  stopped_by="the tune scheduler (ASHA), after its last reported epoch")
        records[key] = read_record(ray.get(ledger.finish.remote(key, record, None)))
    return records


def _error_line(error) -> str:
    """The last meaningful line of a trial's error (Ray wraps it in a long traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or "died" in line:
            return line[:300]
    return (lines[-1] if lines else type(error).__name__)[:300]


def _progress_callback(label: str):
    from ray.tune import Callback

    class Progress(Callback):
        """One line per cell when it starts, finishes or fails (Ray's table shows the rest)."""

        def on_trial_start(self, iteration, trials, trial, **info):
            say(f"[{label}] {_name(trial)}: running ({_counts(trials)})")

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            verdict = "FAILED (see its record)" if last.get("failed") else "ended"
            say(f"[{label}] {_name(trial)}: {verdict} after {last.get('epoch', '?')} epoch(s) ({_counts(trials)})")

        def on_trial_error(self, iteration, trials, trial, **info):
            say(f"[{label}] {_name(trial)}: its worker died; retried from its last checkpoint if retries are left "
                f"({_counts(trials)})")

    return Progress()


def _name(trial) -> str:
    return str((trial.config or {}).get("cell"))


def _counts(trials) -> str:
    states = [t.status for t in trials]
    return ", ".join(f"{states.count(s)} {s.lower()}" for s in ("RUNNING", "PENDING", "TERMINATED", "ERROR") if s in states)


def driver_config(cell: dict):
    """The cell's effective Config (``cells.cell_config``), built in the driver or a trial.

    RecBole's Config exports ``CUDA_VISIBLE_DEVICES=gpu_id`` into the process; the variable is
    put back afterwards so that Ray still sees (and hands out) every GPU."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        config = cell_config(cell)
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
    return config


def data_identity(config) -> dict:
    """What decides the atomic files of a config's data folder: the raw source and the converter settings."""

    if config["dataset"] not in CONVERTERS:
        return {}
    return {**{key: config[key] for key in SOURCE_SETTINGS}, **converter_settings(config)}


def variant_label(identity: dict, varied: list[str]) -> str:
    """The folder name of one data variant: the varied settings and their values, e.g.
    ``text_recipe-tfidf`` (characters outside letters, digits, '.' and '_' become '_')."""
    import re

    return "_".join(f"{key}-{re.sub(r'[^A-Za-z0-9._]+', '_', str(identity.get(key)))}" for key in varied)


def split_data_variants(cells: list[dict], configs: list) -> list:
    """Cells that would convert different data into one folder (a study over ``text_recipe``,
    ``synthetic_scale``, ...) each get the folder of their variant instead: ``data_path`` becomes
    ``<data_path>/<variant_label>`` (and ``synthetic_root`` likewise when the raw source differs),
    so every point trains on data prepared with its own settings. Returns the configs, rebuilt
    for the cells that moved."""

    by_root: dict = {}
    for index, config in enumerate(configs):
        by_root.setdefault(str(Path(config["data_path"]).resolve()), []).append(index)
    for indices in by_root.values():
        identities = [data_identity(configs[i]) for i in indices]
        keys = sorted({key for identity in identities for key in identity})
        varied = [key for key in keys if len({json.dumps(i.get(key), default=str) for i in identities}) > 1]
        if not varied:
            continue
        for index, identity in zip(indices, identities):
            label, config = variant_label(identity, varied), configs[index]
            settings = dict(cells[index]["settings"])
            settings["data_path"] = str(Path(config["data_path"]).parent / label)
            if any(key in varied for key in SOURCE_SETTINGS):
                settings["synthetic_root"] = str(Path(str(config["synthetic_root"])) / label)
            cells[index]["settings"] = settings
            configs[index] = driver_config(cells[index])
    return configs


def prepare_grid(cells: list[dict], folder_name: str):
    """The driver's share for a grid of cells (comparison, study, tune): prepare each data folder
    the cells read once (a challenge comparison gives every action its own; cells that vary a data
    setting get one per variant, ``split_data_variants``), give every cell its identity and resume
    key (``resume_key.cell_identity``: its effective config, the digests of its folder's files and
    the code version) and its folder (``data_root``), claim the results folder (``claim_folder``)
    and find the cells a finished record already answers. Two cells that would still convert
    different data into one folder are refused before anything is converted. Returns (the first
    cell's config, results folder, {key: ok record})."""

    configs = split_data_variants(cells, [driver_config(cell) for cell in cells])
    groups: dict = {}          # data folder -> (config, data identity, first cell's name)
    for cell, config in zip(cells, configs):
        root = str(Path(config["data_path"]).resolve())
        identity = data_identity(config)
        first = groups.setdefault(root, (config, identity, cell["cell"]))
        if first[1] != identity:
            changed = sorted(k for k in set(identity) | set(first[1]) if identity.get(k) != first[1].get(k))
            raise CellError(f"cells {first[2]} and {cell['cell']} would convert different data ({', '.join(changed)}) "
                            f"into the same folder {root}: give one of them its own --data_path")
        cell["data_root"] = root
    first_config = next(iter(groups.values()))[0]
    folder = results_folder(first_config, folder_name)      # claimed before any data is prepared
    digests = {}
    for root, (config, _, _) in groups.items():
        ensure_dataset(config)
        digests[root] = data_digests(config)
    for cell, config in zip(cells, configs):
        cell["identity"] = cell_identity(cell, config, digests[cell["data_root"]])
        cell["key"] = cell["identity"]["key"]
    config = first_config
    found = latest_by_key(records_in(folder, {cell["key"] for cell in cells}))
    return config, folder, {key: record for key, record in found.items() if record["status"] == "ok"}


def results_folder(config, name: str) -> Path:
    """``<results_dir>/<name>``, created and claimed by this process (``claim_folder``)."""
    folder = Path(str(config["results_dir"])).resolve() / name
    folder.mkdir(parents=True, exist_ok=True)
    claim_folder(folder)
    return folder


def claim_folder(folder: Path) -> None:
    """Make this process the one driver of a results folder: an exclusive lock on
    ``<folder>/.driver.lock`` held until ``release_folder`` or the process ends. A second
    ``--compare``, ``--tune`` or ``--study`` on the same folder stops at once with
    ``FolderBusyError`` naming the folder and the holder's pid, instead of waiting: a wait could
    last hours with nothing said, and the rerun it would become (every cell skipped as done) is
    one command away once the first has ended. Claiming a folder this process holds is a no-op."""
    folder = Path(folder).resolve()
    if str(folder) in _CLAIMED:
        return
    handle, holder = try_lock(folder / DRIVER_LOCK)
    if handle is None:
        raise FolderBusyError(f"{folder}: another command (pid {holder}) is running in this results folder; wait for "
                              f"it to end, then rerun to reuse its finished cells, or give --results_dir another folder")
    _CLAIMED[str(folder)] = handle


def release_folder(folder: Path) -> None:
    """Let another command drive ``folder`` (the end of ``claim_folder``'s hold)."""
    handle = _CLAIMED.pop(str(Path(folder).resolve()), None)
    if handle is not None:
        handle.close()
