"""Hyper-parameter tuning with Ray Tune, for MMa4CTR or any RecBole baseline.

``python run_recbole_mma4ctr.py --tune --model=MMa4CTR --dataset=wechat --params_file=properties/hyper/MMa4CTR.hyper``

Options (every other ``--key=value`` is a RecBole setting shared by all trials, e.g. ``--epochs=20``):

=====================  =====================================================================
``--params_file``      search space in RecBole's hyper-file format (default:
                       ``properties/hyper/<model>.hyper``, else ``properties/hyper/default.hyper``)
``--num_samples``      samples drawn from the space (8); every ``grid`` line multiplies them
``--cpus_per_trial``   CPUs Ray reserves per trial (1; fractions allowed); also torch's threads
``--gpus_per_trial``   GPUs per trial (0; fractions such as 0.25 put trials on one GPU together)
``--metric``           validation metric ranked and used by ASHA (the configured ``valid_metric``)
``--grace_period``     epochs every trial gets before ASHA may stop it (2)
``--reduction_factor`` ASHA's rung reduction factor (2)
``--ray_address``      join a running cluster (``auto`` or ``host:port``); default: start a
                       local one with one CPU per available core (and every visible GPU)
``--ray_tmp``          Ray's temporary folder (default: ``<results folder>/rt`` when that path
                       is short enough for unix sockets, else ``/tmp/rmc-<hash>``, see below)
=====================  =====================================================================

The hyper file holds one dimension a line, ``name kind values`` (RecBole's format; ``#`` starts a
comment line)::

    learning_rate loguniform -9.2,-4.6       # exp(uniform(-9.2, -4.6)): RecBole/hyperopt bounds
    train_batch_size choice [1024,4096]
    mlp_hidden_size choice ['[128,32,4]','[64,16,4]']
    dropout_prob uniform 0,0.5
    embedding_size quniform 16,128,16        # rounded to a multiple of 16 (an int)
    fusion grid ['vat_concat','vt_cross']    # every value, times --num_samples

Kinds: ``choice``, ``grid``, ``uniform``, ``quniform``, ``loguniform`` (natural-log bounds, as
RecBole and hyperopt read them), ``qloguniform`` (natural-log bounds, step q), ``randint``
(low inclusive, high exclusive), ``qrandint``.

How it runs: the driver builds one Config and prepares the dataset once
(``prepare.sources.ensure_dataset``); trials then only read the atomic files. Every trial builds
its own Config from plain dicts and absolute paths, trains with ``Trainer.fit`` and reports its
validation metrics to Ray after every epoch (from ``callback_fn``); it returns nothing. ASHA stops
weak trials early. A trial that raises is recorded as failed and the others go on.

Output, in ``<results_dir>/tune-<model>-<dataset>/``: ``trials.md``, ``trials.csv`` and
``trials.json`` (every trial: parameters, best validation metric and its epoch, epochs run,
status: completed / early-stopped (validation) / stopped by ASHA / failed, with the error),
``best.yaml`` (the best trial's parameters plus the command line's settings; it goes straight
to ``--config_files``), ``ray/`` (Ray Tune's experiment folders; each trial's folder keeps its
RecBole log, stdout and stderr, which are not echoed to the console) and ``rt/`` (Ray's
temporary files). Unix socket paths are limited to 107 bytes and Ray puts
sockets about 65 characters deep in its temporary folder, so when ``<folder>/rt`` is longer than
40 characters the temporary folder is ``/tmp/rmc-<hash of the folder>`` instead, and
``<folder>/rt`` is a symbolic link to it.

With ``--ray_address`` the trials read the atomic files and config files at the driver's
absolute paths, so every node needs this package installed and those paths (a shared
filesystem); the driver checks that one node can hold a trial's CPUs and GPUs.

Ray is imported only inside functions here and in ``studies.py``: the normal training path never
imports it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .defaults import properties_dir

KINDS = {  # kind -> number of comma-separated numbers it takes (None: a Python list literal)
    "choice": None, "grid": None, "uniform": 2, "quniform": 3, "loguniform": 2, "qloguniform": 3,
    "randint": 2, "qrandint": 3,
}
# Settings a trial must not change: they decide which data the driver prepared once (and epochs,
# the most ASHA gives a trial).
UNTUNABLE = {"dataset", "data_path", "raw_root", "synthetic_root", "synthetic_scale", "synthetic_seed", "label_action",
             "min_user_actions", "min_user_interactions", "pca_variance", "token_maxlen", "visual_dim", "acoustic_dim",
             "textual_dim", "chunk_rows", "epochs"}
# Settings that only place a run's files or pick its device: left out of best.yaml.
PLUMBING_KEYS = {"results_dir", "checkpoint_dir", "show_progress", "gpu_id", "log_wandb", "eval_step", "record_stem"}
PATH_KEYS = ("data_path", "checkpoint_dir", "results_dir", "raw_root", "synthetic_root")
TUNE_DEFAULTS = {"num_samples": "8", "cpus_per_trial": "1", "gpus_per_trial": "0", "metric": None, "grace_period": "2",
                 "reduction_factor": "2", "ray_address": None, "ray_tmp": None, "params_file": None}
SOCKET_DEPTH = 67          # characters Ray adds below its temporary folder for its socket files
SOCKET_LIMIT = 107         # AF_UNIX path limit


class TuneError(ValueError):
    """A usage error reported as ``error: ...`` with exit status 2."""


def say(message: str) -> None:
    print(message, flush=True)


# ---- the search space ----------------------------------------------------------------------------
@dataclass
class Dimension:
    name: str
    kind: str
    values: list      # the choices, or the numbers (bounds, step)
    line: int


def read_hyper_file(path) -> list[Dimension]:
    """Parse a RecBole-style hyper file; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise TuneError(f"params file {path} not found")
    dimensions, seen = [], set()
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        where = f"{path}, line {number}"
        if len(parts) < 3:
            raise TuneError(f"{where}: expected 'name kind values', got {line!r}")
        name, kind, text = parts
        kind = kind.lower()
        if kind not in KINDS:
            raise TuneError(f"{where}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        if name in seen:
            raise TuneError(f"{where}: {name} is given twice")
        if name in UNTUNABLE:
            raise TuneError(f"{where}: {name} cannot be tuned: the data are prepared once before the trials"
                            + (" (set the maximum with --epochs; ASHA decides how many each trial gets)" if name == "epochs" else ""))
        seen.add(name)
        dimensions.append(Dimension(name, kind, _parse_values(kind, text, where), number))
    if not dimensions:
        raise TuneError(f"{path}: no dimension to search (lines 'name kind values')")
    return dimensions


def _parse_values(kind: str, text: str, where: str) -> list:
    if KINDS[kind] is None:
        try:
            values = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError) as error:
            raise TuneError(f"{where}: {kind} needs a list literal such as [1024,4096] ({error})") from None
        if not isinstance(values, (list, tuple)) or not values:
            raise TuneError(f"{where}: {kind} needs a non-empty list, got {text.strip()!r}")
        return [_typed(value) for value in values]
    try:
        numbers = [float(part) for part in text.replace(" ", "").split(",")]
    except ValueError:
        raise TuneError(f"{where}: {kind} needs {KINDS[kind]} comma-separated numbers, got {text.strip()!r}") from None
    if len(numbers) != KINDS[kind]:
        raise TuneError(f"{where}: {kind} needs {KINDS[kind]} comma-separated numbers (low,high"
                        + (",q" if KINDS[kind] == 3 else "") + f"), got {text.strip()!r}")
    if numbers[0] >= numbers[1]:
        raise TuneError(f"{where}: low must be below high, got {text.strip()!r}")
    if len(numbers) == 3 and numbers[2] <= 0:
        raise TuneError(f"{where}: the step q must be positive, got {text.strip()!r}")
    return numbers


def _typed(value):
    """A string holding a Python literal (RecBole writes lists as '[64,64]') becomes that value."""
    if isinstance(value, str):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
        return parsed if isinstance(parsed, (list, dict, int, float, bool)) else value
    if isinstance(value, tuple):
        return list(value)
    return value


def search_space(dimensions: list[Dimension]) -> dict:
    """Ray Tune's param_space for the parsed dimensions."""
    from ray import tune

    space = {}
    for dim in dimensions:
        v = dim.values
        if dim.kind == "choice":
            space[dim.name] = tune.choice(v)
        elif dim.kind == "grid":
            space[dim.name] = tune.grid_search(v)
        elif dim.kind == "uniform":
            space[dim.name] = tune.uniform(v[0], v[1])
        elif dim.kind == "quniform":
            space[dim.name] = tune.quniform(v[0], v[1], v[2])
        elif dim.kind == "loguniform":
            space[dim.name] = tune.loguniform(math.exp(v[0]), math.exp(v[1]))
        elif dim.kind == "qloguniform":
            space[dim.name] = tune.qloguniform(math.exp(v[0]), math.exp(v[1]), v[2])
        elif dim.kind == "randint":
            space[dim.name] = tune.randint(int(v[0]), int(v[1]))
        else:
            space[dim.name] = tune.qrandint(int(v[0]), int(v[1]), int(v[2]))
    return space


def integer_dimensions(dimensions: list[Dimension]) -> list[str]:
    """Dimensions whose samples are whole numbers (Ray's q-kinds return floats such as 1024.0)."""
    whole = []
    for dim in dimensions:
        if dim.kind in ("randint", "qrandint"):
            whole.append(dim.name)
        elif dim.kind in ("quniform", "qloguniform") and float(dim.values[2]).is_integer():
            whole.append(dim.name)
    return whole


def trial_value(value, whole: bool = False):
    """A sampled value as a trial passes it to RecBole (``whole``: a float such as 1024.0 -> 1024)."""
    if whole and isinstance(value, float) and value.is_integer():
        return int(value)
    return _typed(value)


def default_params_file(model: str) -> Path:
    own = properties_dir() / "hyper" / f"{model}.hyper"
    return own if own.exists() else properties_dir() / "hyper" / "default.hyper"


# ---- resources and Ray -----------------------------------------------------------------------------
@dataclass
class Resources:
    cpus_per_trial: float
    gpus_per_trial: float
    address: str | None = None
    temp_dir: str | None = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_resources(options: dict) -> Resources:
    try:
        cpus = float(options.get("cpus_per_trial") or 1)
        gpus = float(options.get("gpus_per_trial") or 0)
    except ValueError:
        raise TuneError("--cpus_per_trial and --gpus_per_trial take numbers (fractions allowed)") from None
    if cpus <= 0 or gpus < 0:
        raise TuneError("--cpus_per_trial must be > 0 and --gpus_per_trial >= 0")
    if gpus > 1 and not gpus.is_integer():
        raise TuneError("--gpus_per_trial above 1 must be a whole number (Ray only splits a single GPU)")
    return Resources(cpus, gpus, options.get("ray_address") or None, options.get("ray_tmp") or None)


def check_local_resources(resources: Resources) -> None:
    """Refuse up front what would leave trials PENDING forever on a local cluster."""
    if resources.address:
        return
    cores, gpus = available_cores(), visible_gpus()
    if resources.gpus_per_trial > 0 and gpus == 0:
        raise TuneError(f"--gpus_per_trial={resources.gpus_per_trial:g} but this machine has no usable CUDA GPU "
                        f"(torch.cuda.device_count() is 0): Ray would keep every trial PENDING forever. "
                        f"Use --gpus_per_trial=0, or --ray_address= of a cluster with GPUs.")
    if resources.gpus_per_trial > gpus > 0:
        raise TuneError(f"--gpus_per_trial={resources.gpus_per_trial:g} but this machine has {gpus} GPU(s)")
    if resources.cpus_per_trial > cores:
        raise TuneError(f"--cpus_per_trial={resources.cpus_per_trial:g} but this machine has {cores} core(s)")


def check_cluster_resources(resources: Resources) -> None:
    """On a joined cluster: some node must hold one trial's CPUs and GPUs, or trials never start."""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    fits = [n for n in nodes if n.get("CPU", 0) >= resources.cpus_per_trial and n.get("GPU", 0) >= resources.gpus_per_trial]
    if not fits:
        most = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
        raise TuneError(f"no node of the cluster at {resources.address} has {resources.cpus_per_trial:g} CPU(s) and "
                        f"{resources.gpus_per_trial:g} GPU(s) for one trial (largest node: {most[0]:g} CPUs, "
                        f"{most[1]:g} GPUs); trials would stay PENDING forever")


def ray_temp_dir(folder: Path, requested: str | None = None) -> str:
    """A Ray temporary folder whose socket paths fit the unix limit (see the module docstring)."""
    if requested:
        path = Path(requested).resolve()
        if len(str(path)) + SOCKET_DEPTH > SOCKET_LIMIT:
            raise TuneError(f"--ray_tmp={path} is too long for Ray's unix sockets: keep it within "
                            f"{SOCKET_LIMIT - SOCKET_DEPTH} characters")
        path.mkdir(parents=True, exist_ok=True)
        return str(path)
    inside = folder.resolve() / "rt"
    if len(str(inside)) + SOCKET_DEPTH <= SOCKET_LIMIT:
        if inside.is_symlink():
            inside.unlink()
        inside.mkdir(parents=True, exist_ok=True)
        return str(inside)
    import tempfile

    short = Path(tempfile.gettempdir()) / f"rmc-{hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]}"
    short.mkdir(parents=True, exist_ok=True)
    if inside.is_symlink() or not inside.exists():
        if inside.is_symlink():
            inside.unlink()
        inside.symlink_to(short, target_is_directory=True)
    return str(short)


def start_ray(folder: Path, resources: Resources) -> str:
    """Start a local Ray (or join ``resources.address``); returns a one-line description."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray 2.6 imports the deprecated pkg_resources in the driver and in every worker it starts.
    quiet = "ignore:pkg_resources is deprecated as an API:UserWarning"
    if quiet not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), quiet]))
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    import ray

    if resources.address:
        ray.init(address=resources.address, include_dashboard=False, log_to_driver=False)
        check_cluster_resources(resources)
        total = ray.cluster_resources()
        return f"joined Ray at {resources.address}: {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs"
    temp_dir = ray_temp_dir(folder, resources.temp_dir)
    cores, gpus = available_cores(), visible_gpus()
    ray.init(num_cpus=cores, num_gpus=gpus, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    return f"started a local Ray: {cores} CPUs, {gpus} GPUs, temporary files in {temp_dir}"


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def worker_setup(cpus_per_trial: float) -> None:
    """What every trial needs in its own worker process (driver patches do not reach it)."""
    import warnings

    import torch

    from .metrics import register_metrics

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(int(cpus_per_trial) or 1)
    register_metrics()


def trial_device(gpus_per_trial: float) -> str:
    """``gpu_id`` for this trial: the GPU(s) Ray assigned (RecBole re-exports it as
    CUDA_VISIBLE_DEVICES, so it must name the same devices), or '' for the CPU."""
    if gpus_per_trial <= 0:
        return ""
    import ray

    return ",".join(str(int(i)) for i in ray.get_gpu_ids())


def quiet_console() -> None:
    """RecBole logs everything to the console; in a trial the log file (trial folder) keeps it all."""
    import logging

    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)


# ---- the driver's share: one Config, the data prepared once, absolute paths ----------------------
def prepare_in_driver(model: str, dataset: str, config_files, overrides: dict):
    """Build the Config in the driver and prepare the dataset once; returns the Config.

    RecBole's Config exports ``CUDA_VISIBLE_DEVICES=gpu_id`` into the process; the driver puts the
    variable back afterwards so that Ray still sees (and hands out) every GPU.
    """
    from .config import build_config
    from .prepare.sources import ensure_dataset

    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        config = build_config(model, dataset, config_files, overrides)
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
    ensure_dataset(config)
    return config


def absolute_settings(config, config_files, overrides: dict) -> tuple[list[str], dict]:
    """Config files and overrides for a trial, every path made absolute (trials run elsewhere)."""
    if isinstance(config_files, str):
        config_files = config_files.split()
    files = [str(Path(f).resolve()) for f in config_files or []]
    settings = {str(k): str(v) for k, v in overrides.items()}
    data_root = Path(str(config["data_path"])).resolve().parent   # RecBole appended the dataset name
    settings["data_path"] = str(data_root)
    for key in PATH_KEYS[1:]:
        if config[key] is not None:
            settings[key] = str(Path(str(config[key])).resolve())
    return files, settings


def results_folder(config, name: str) -> Path:
    folder = Path(str(config["results_dir"])).resolve() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- one trial ---------------------------------------------------------------------------------
def tune_trial(params: dict, setup: dict) -> None:
    """Ray trainable: train one configuration, report validation metrics after every epoch.

    Returns nothing: Ray takes a returned dict for one more result (STACK.md).
    """
    worker_setup(setup["cpus_per_trial"])
    from logging import getLogger

    from ray.air import session
    from recbole.data import data_preparation
    from recbole.utils import init_logger, init_seed

    from .config import build_config
    from .utils import create_dataset, get_model, get_trainer

    metric = setup["metric"]
    overrides = dict(setup["overrides"])
    overrides.update({name: trial_value(value, name in setup["integers"]) for name, value in params.items()})
    overrides["checkpoint_dir"] = str(Path(session.get_trial_dir()) / "saved")
    overrides["gpu_id"] = trial_device(setup["gpus_per_trial"])
    config = build_config(setup["model"], setup["dataset"], setup["config_files"], overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    quiet_console()
    data = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, data)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    network = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, network)
    getLogger().info(f"trial {session.get_trial_id()}: {params}")
    best = {"value": None, "epoch": None}
    smaller = setup["mode"] == "min"

    def report(epoch_idx, valid_score):
        history = getattr(trainer, "history", None) or [{}]
        metrics = dict(history[-1].get("valid") or {})
        if not metrics and valid_score is not None and metric == setup["valid_metric"]:
            metrics = {metric: float(valid_score)}
        if metric not in metrics:
            return False          # this epoch was not validated
        value = float(metrics[metric])
        if best["value"] is None or (value < best["value"] if smaller else value > best["value"]):
            best.update(value=value, epoch=epoch_idx + 1)
        last_epoch = epoch_idx + 1 >= trainer.epochs
        early_stop = getattr(trainer, "cur_step", 0) > getattr(trainer, "stopping_step", math.inf)
        session.report({
            **{k: float(v) for k, v in metrics.items()},
            "epoch": epoch_idx + 1,
            f"best_{metric}": best["value"],
            "best_epoch": best["epoch"],
            "train_loss": float(history[-1].get("train_loss", float("nan"))),
            "lr": float(history[-1].get("lr", float("nan"))),
            "stop_reason": "epochs" if last_epoch else "early stopping" if early_stop else "",
        })
        return False

    trainer.fit(train_data, valid_data, saved=False, show_progress=False, callback_fn=report)


# ---- the whole tuning run -------------------------------------------------------------------------
def metric_mode(metric: str) -> str:
    from recbole.evaluator.register import smaller_metrics

    return "min" if metric.lower() in smaller_metrics else "max"


def run_tuning(model: str, dataset: str, config_files=None, overrides=None, options=None) -> Path:
    """Tune ``model`` on ``dataset``; returns the results folder (see the module docstring)."""
    options = {**TUNE_DEFAULTS, **(options or {})}
    overrides = dict(overrides or {})
    params_file = Path(options["params_file"] or default_params_file(model))
    dimensions = read_hyper_file(params_file)
    clash = [d.name for d in dimensions if d.name in overrides]
    if clash:
        raise TuneError(f"{', '.join(clash)} given both on the command line and in {params_file}")
    try:
        num_samples = int(options["num_samples"])
        grace_period = int(options["grace_period"])
        reduction_factor = float(options["reduction_factor"])
    except ValueError:
        raise TuneError("--num_samples and --grace_period take whole numbers, --reduction_factor a number") from None
    if num_samples < 1 or grace_period < 1 or reduction_factor <= 1:
        raise TuneError("--num_samples and --grace_period must be >= 1, --reduction_factor > 1")
    resources = parse_resources(options)
    check_local_resources(resources)

    config = prepare_in_driver(model, dataset, config_files, overrides)
    metric = str(options["metric"] or config["valid_metric"]).lower()
    configured = [m.lower() for m in config["metrics"]]
    if metric not in configured:
        raise TuneError(f"--metric={metric} is not among the configured metrics {configured}")
    mode = metric_mode(metric)
    epochs = int(config["epochs"])
    folder = results_folder(config, f"tune-{config['model']}-{config['dataset']}")
    files, settings = absolute_settings(config, config_files, overrides)
    settings.update({"show_progress": "False", "eval_step": "1"})
    setup = {"model": model, "dataset": dataset, "config_files": files, "overrides": settings, "metric": metric,
             "mode": mode, "integers": integer_dimensions(dimensions), "valid_metric": str(config["valid_metric"]).lower(),
             "cpus_per_trial": resources.cpus_per_trial, "gpus_per_trial": resources.gpus_per_trial}
    say(f"[tune] {model} on {dataset}: {len(dimensions)} dimension(s) from {params_file}, {num_samples} sample(s), "
        f"up to {epochs} epochs a trial, ranking by valid {metric} ({mode}); "
        f"{resources.cpus_per_trial:g} CPU(s) and {resources.gpus_per_trial:g} GPU(s) a trial")
    started = time.time()
    try:
        say(f"[tune] {start_ray(folder, resources)}")
        grid = _fit(setup, dimensions, num_samples, epochs, grace_period, reduction_factor, folder)
    finally:
        stop_ray()
    rows = trial_rows(grid, dimensions, metric)
    rows.sort(key=lambda row: _rank_key(row, metric, mode))
    write_trial_tables(folder, rows, dimensions, metric, mode)
    ok = [row for row in rows if row.get(f"best_{metric}") is not None]
    summary = {"model": model, "dataset": dataset, "metric": metric, "mode": mode, "epochs": epochs,
               "num_samples": num_samples, "params_file": str(params_file.resolve()), "seconds": round(time.time() - started, 1),
               "resources": {"cpus_per_trial": resources.cpus_per_trial, "gpus_per_trial": resources.gpus_per_trial,
                             "ray_address": resources.address},
               "trials": rows, "best": ok[0] if ok else None}
    if ok:
        best_path = write_best_config(folder, config, config_files, overrides, ok[0], dimensions, metric)
        summary["best_config"] = str(best_path)
    (folder / "trials.json").write_text(json.dumps(summary, indent=2, default=str))
    failed = sum(row["status"] == "failed" for row in rows)
    say(f"[tune] {len(rows)} trial(s) in {time.time() - started:.0f} s: {len(ok)} with a result, {failed} failed; "
        f"table: {folder / 'trials.md'}")
    if not ok:
        raise RuntimeError(f"no trial reported a validation {metric}; see {folder / 'trials.md'} and the logs in {folder / 'ray'}")
    best = ok[0]
    say(f"[tune] best: valid {metric}={best[f'best_{metric}']:.4f} at epoch {best['best_epoch']} with "
        + ", ".join(f"{d.name}={_show(best.get(d.name))}" for d in dimensions))
    return folder


def _fit(setup, dimensions, num_samples, epochs, grace_period, reduction_factor, folder):
    from ray import air, tune
    from ray.tune.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(epochs, 1),
                              grace_period=min(grace_period, max(epochs, 1)), reduction_factor=reduction_factor)
    trainable = tune.with_resources(tune.with_parameters(tune_trial, setup=setup),
                                    {"cpu": setup["cpus_per_trial"], "gpu": setup["gpus_per_trial"]})
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(dimensions),
        tune_config=tune.TuneConfig(metric=setup["metric"], mode=setup["mode"], scheduler=scheduler, num_samples=num_samples),
        run_config=air.RunConfig(name=f"trials-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(folder / "ray"),
                                 log_to_file=True, verbose=1, failure_config=air.FailureConfig(max_failures=0)),
    )
    return tuner.fit()


# ---- tables ----------------------------------------------------------------------------------------
def trial_params(result) -> dict:
    """A trial's sampled parameters: from its params.json (there even when it failed at once)."""
    path = Path(result.path or "") / "params.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    return dict((result.metrics or {}).get("config") or {})


def error_line(error) -> str:
    """The last meaningful line of a trial's error (Ray wraps it in a long traceback)."""
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:300]
    return (lines[-1] if lines else type(error).__name__)[:300]


def trial_rows(grid, dimensions, metric: str) -> list[dict]:
    rows, whole = [], integer_dimensions(dimensions)
    for result in grid:
        metrics = result.metrics or {}
        params = trial_params(result)
        found = re.search(r"_([0-9a-f]+_\d{5})_", Path(result.path or "").name)
        row = {"trial": metrics.get("trial_id") or (found.group(1) if found else "?")}
        row.update({d.name: trial_value(params.get(d.name), d.name in whole) for d in dimensions})
        reason = metrics.get("stop_reason")
        if result.error is not None:
            status = "failed"
        elif reason == "epochs":
            status = "completed"
        elif reason == "early stopping":
            status = "early-stopped (validation)"
        elif metrics.get("epoch"):
            status = "stopped by ASHA"
        else:
            status = "no result"
        row.update({
            "status": status,
            f"best_{metric}": metrics.get(f"best_{metric}"),
            "best_epoch": metrics.get("best_epoch"),
            "epochs_run": metrics.get("epoch", 0),
            f"last_{metric}": metrics.get(metric),
            "seconds": round(float(metrics.get("time_total_s") or 0.0), 1),
            "error": error_line(result.error),
            "log": str(result.path or ""),
        })
        rows.append(row)
    return rows


def _rank_key(row, metric, mode):
    value = row.get(f"best_{metric}")
    if value is None:
        return (1, 0.0)
    return (0, -value if mode == "max" else value)


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def markdown(rows: list[dict], columns: list[str], headers: list[str] | None = None, decimals=()) -> str:
    """A markdown table of ``rows``: floats of the ``decimals`` columns (metrics) to 4 decimals,
    ``seconds`` to 1, other floats (parameters) to 4 significant digits; missing values as '-'."""
    headers = headers or columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
                cells.append("-")
            elif isinstance(value, float) and column in decimals:
                cells.append(f"{value:.4f}")
            elif isinstance(value, float) and column == "seconds":
                cells.append(f"{value:.1f}")
            else:
                cells.append(_show(value).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_trial_tables(folder: Path, rows, dimensions, metric: str, mode: str) -> None:
    from .report import _write_csv, _write_text

    columns = ["trial"] + [d.name for d in dimensions] + [f"best_{metric}", "best_epoch", "epochs_run", "status",
                                                          "seconds", "error"]
    headers = ["trial"] + [d.name for d in dimensions] + [f"best valid {metric}", "best epoch", "epochs run", "status",
                                                          "seconds", "error"]
    text = (f"# Tuning trials, best first (valid {metric}, {'higher' if mode == 'max' else 'lower'} is better)\n\n"
            + markdown(rows, columns, headers, decimals=(f"best_{metric}",)) + "\n\n"
            "'stopped by ASHA': the scheduler ended the trial after its last epoch here; 'early-stopped "
            "(validation)': RecBole's stopping_step ended it; logs per trial are in ray/.\n")
    _write_text(folder / "trials.md", text)
    _write_csv(folder / "trials.csv", [{k: row.get(k) for k in columns + ["log"]} for row in rows])


def write_best_config(folder: Path, config, config_files, overrides: dict, best: dict, dimensions, metric: str) -> Path:
    """best.yaml: the command line's settings (as the Config typed them) plus the best parameters.

    Files given with --config_files are not copied in: the usage line names them before best.yaml."""
    import yaml

    from .record import plain

    settings = {key: plain(config[key]) for key in overrides if key not in PLUMBING_KEYS}
    settings.update({d.name: best[d.name] for d in dimensions})
    header = (f"# Best of the tuning trials of {config['model']} on {config['dataset']}: valid {metric} = "
              f"{best[f'best_{metric}']:.4f} at epoch {best['best_epoch']} (trial {best['trial']}).\n"
              f"# Use: python run_recbole_mma4ctr.py --model={config['model']} --dataset={config['dataset']} "
              f"--config_files={_files_with(config_files, folder / 'best.yaml')}\n")
    path = folder / "best.yaml"
    path.write_text(header + yaml.safe_dump(settings, sort_keys=False, default_flow_style=False))
    return path


def exit_status(work, last_line: str) -> int:
    """Run ``work()`` (returns a results folder) for a command: usage errors exit 2, a run with no
    result exits 1; on success the last line printed is ``<folder>/<last_line>``."""
    try:
        folder = work()
    except TuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(folder / last_line, flush=True)
    return 0


def _files_with(config_files, path: Path) -> str:
    files = config_files.split() if isinstance(config_files, str) else list(config_files or [])
    listed = " ".join(str(Path(f).resolve()) for f in files + [path])
    return f'"{listed}"' if files else listed


def main(model: str, dataset: str, config_files, overrides: dict) -> int:
    """The ``--tune`` command: pops the tuning options from ``overrides``; returns an exit status."""
    options = {key: overrides.pop(key) for key in list(overrides) if key in TUNE_DEFAULTS}
    return exit_status(lambda: run_tuning(model, dataset, config_files, overrides, options), "best.yaml")
