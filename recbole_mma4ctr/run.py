"""One experiment cell, start to end: the only code that builds a RecBole pipeline.

A cell is plain data (model, dataset, settings, epoch marks; ``cells.make_cell`` builds one).
``run_cell`` builds the config, the dataset, the dataloaders, the model and the trainer, trains,
validates, tests once at the end (and, with ``marks``, after every epoch: the paper's epoch-mark
columns), and returns the result record and the test predictions. A single run, a comparison
cell, a tune trial and a study point all call it; what differs is only the hook:

- ``on_epoch(progress)`` is called after every accepted epoch with the epoch number, its
  history entry (train loss, learning rate, validation metrics) and, with marks, the test
  metrics; returning True stops training (a tune trial reports validation to ASHA here).
- ``checkpoints`` (an object with ``load() -> bytes | None`` and ``save(epoch, blob)``) receives,
  after every epoch, the trainer's resume state (``Trainer.save_state``: weights, optimizer,
  schedule, best checkpoint, counters, history, every random state) with the epoch-mark tests
  carried in it. A cell whose worker died is handed the bytes back (``Trainer.load_state``) and
  continues exactly as if it had not been interrupted.

Ray is never imported here: the schedulers (``engine.py``) bring it.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from time import time
from typing import NamedTuple

import numpy as np

from .cells import cell_config, make_cell, results_dir_of
from .data.batches import sliced_batches
from .data.prepared_store import built_splits, prepared_datasets
from .data.robustness import evaluate_missing_modality
from .errors import UsageError
from .model.tasks import action_predictions, action_results
from .prepare.sources import data_digests, ensure_dataset, prepared_manifest
from .record import (device_name, failure_record, new_run_id, now_iso, plain, SCHEMA, scored_rows_digest, versions,
                     where, write_record)
from .resume_key import cell_identity
from .stats import predictions_by_coldness
from .threads import apply_torch_threads
from .utils import get_model, get_trainer

HIDDEN_SAMPLE_ROWS = 20_000



class Outcome(NamedTuple):
    """What a command wrote (paths) and what failed (one complete line each): every mode returns
    one and the command line alone prints it and picks the exit status (``cli.py``)."""

    written: tuple
    failures: tuple

def say(message: str) -> None:
    print(message, flush=True)


def run_cell(cell: dict, on_epoch=None, checkpoints=None) -> tuple[dict, dict | None]:
    """Train and evaluate one cell; returns (record, predictions). Errors propagate to the caller,
    which records the failure (``record.failure_record``)."""
    import torch
    from recbole.data import data_preparation
    from recbole.utils import init_seed


    run_id, started_at, cell_begun = cell.get("run_id") or new_run_id(), now_iso(), time()
    marks = sorted({int(m) for m in cell.get("marks") or []}) or None
    # RecBole 1.2.1 on pandas 2 / torch 2.13 warns about its own code on every epoch
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\.|$)")
    config = cell_config(cell)      # the marks' epochs and no early stop included
    as_built = dict(config.final_config_dict)   # the identity's config, before the run derives values in it
    plateau = _plateau_settings(config, marks)
    scored = _test_after_training(config, marks, cell)
    apply_torch_threads(config["torch_threads"])
    init_seed(config["seed"], config["reproducibility"])
    log_path = _init_log(config, run_id)
    logger = logging.getLogger()
    manifest = ensure_dataset(config) if cell.get("prepare", True) else prepared_manifest(config)
    identity = cell.get("identity") or cell_identity(cell, as_built, data_digests(config))
    key = identity["key"]
    say(f"device: {device_name(config['device'])}")

    prepared = prepared_datasets(config)   # built, or mapped from the prepared store (data/prepared_store.py)
    dataset = prepared.dataset
    logger.info(dataset_summary(dataset))
    # RecBole's own builder on the splits already built, with one-index-op training batches
    with sliced_batches(), built_splits(prepared):
        train_data, valid_data, test_data = data_preparation(config, dataset)
    if plateau:
        _fit_batches_to_budget(config, train_data, plateau)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.saved_model_file = os.path.join(trainer.checkpoint_dir, f"{config['model']}-{run_id}.pth")
    os.makedirs(trainer.checkpoint_dir, exist_ok=True)

    carried, resumed_from_epoch = {"test_by_epoch": []}, None
    blob = checkpoints.load() if checkpoints is not None else None
    if blob is not None:
        carried = trainer.load_state(blob, train_data)
        resumed_from_epoch = trainer.start_epoch
        logger.info(f"resumed from the checkpoint of epoch {resumed_from_epoch}")

    def after_epoch(epoch_idx, valid_score):
        entry = trainer.history[-1] if trainer.history else {}
        tested = None
        if marks:
            begun = time()
            result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
            tested = {"epoch": epoch_idx + 1, "seconds": round(time() - begun, 3), **plain(result)}
            carried["test_by_epoch"].append(tested)
            logger.info(f"test after epoch {epoch_idx + 1}: {plain(result)}")
        if checkpoints is not None:
            checkpoints.save(epoch_idx + 1, trainer.save_state(train_data, carried))
        if on_epoch is not None:
            return bool(on_epoch({"epoch": epoch_idx + 1, "epochs": trainer.epochs, "entry": entry, "test": tested,
                                  "valid_score": valid_score, "stopping": trainer.cur_step}))
        return False

    first_step = first_step_clock(model)
    begun = time()
    best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=True,
                                               show_progress=config["show_progress"], callback_fn=after_epoch)
    fit_seconds = time() - begun
    begun = time()
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"]) \
        if scored else {}
    test_seconds = time() - begun
    tested_at = now_iso() if scored else None
    predictions = _predictions(trainer, model, test_data, config, train_data._dataset) if scored else None
    by_action = {}
    if predictions is not None and hasattr(model, "predict_actions"):    # a multi-task model (multitask.py)
        predictions.update(action_predictions(model, test_data, config["device"]))
        by_action = action_results(predictions, model.actions, (cell.get("extra") or {}).get("challenge"))
    robustness = evaluate_missing_modality(trainer, test_data, train_data._dataset, cell["robustness"],
                                           plain(test_result)) if cell.get("robustness") else None

    record = {
        "schema": SCHEMA, "status": "ok", "run_id": run_id, "kind": cell.get("kind", "run"), "cell": cell.get("cell"),
        "key": key, "identity": identity, "model": cell["model"], "dataset": config["dataset"],   # as named: DIN+mm (config: DIN)
        "protocol": _protocol_of(config, cell.get("protocol")), "split": _split_of(config),
        "started_at": started_at, "finished_at": now_iso(), "where": where(device_name(config["device"])),
        "best_valid": plain(best_valid), "best_valid_score": plain(best_valid_score), "test": plain(test_result),
        "test_evaluated": ("once, after training, with the best-validation weights"
                           + ("; and after every epoch for the epoch marks (never used to select)" if marks else ""))
                          if scored else "never (test_after_training: false, as in a tuned comparison's trials)",
        "test_evaluated_at": tested_at, "test_rows": scored_rows_digest(predictions),
        "train_to": config["train_to"], "steps": int(trainer.steps), "steps_per_epoch": len(train_data),
        "train_batch_size": int(config["train_batch_size"]), "step_budget": int(config["step_budget"]),
        "stopped_on": trainer.stopped_on, "valid_plateau": valid_plateau(trainer.history, int(config["plateau_patience"])),
        "epochs_run": trainer.epochs_run, "history": trainer.history, "interrupts": trainer.interrupts,
        "train_seconds": round(trainer.train_seconds, 3), "valid_seconds": round(trainer.valid_seconds, 3),
        "fit_seconds": round(fit_seconds, 3), "test_seconds": round(test_seconds, 3),
        "cell_seconds": round(time() - cell_begun, 3),     # the whole cell: config, data, model, fit, test
        "startup_seconds": round(first_step["at"] - cell_begun, 3) if first_step["at"] else None,
        "prepared_data": {"source": prepared.source, "key": prepared.key, "seconds": round(prepared.seconds, 3)},
        "marks": marks, "test_by_epoch": carried["test_by_epoch"] or None,
        "test_by_coldness": predictions_by_coldness(predictions), **by_action,
        "resumed_from_epoch": resumed_from_epoch,
        "logloss_on": "sigmoid(score)" if trainer.scores_squashed else "probability",
        "trainable_parameters": int(parameters), "device": device_name(config["device"]),
        "features": _feature_summary(dataset), "data": _data_summary(manifest),
        "split_sizes": {"train": len(train_data._dataset), "valid": len(valid_data._dataset), "test": len(test_data._dataset)},
        "checkpoint": trainer.saved_model_file, "log": log_path,
        "config": plain(dict(config.final_config_dict)), "versions": versions(identity["code"]), **(cell.get("extra") or {}),
        **({"robustness": robustness} if robustness else {}),
    }
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return record, predictions


def dataset_summary(dataset) -> str:
    """RecBole's ``str(dataset)`` (the log's dataset lines), its averages counted with
    ``np.bincount``: RecBole's counts each id through a Python ``Counter``, which took 5-15 s on
    7 M interactions, twice (the log's colour filter formats the message again)."""
    from recbole.utils import set_color

    def average_actions(field) -> float:
        counts = np.bincount(dataset.inter_feat[field].numpy())
        return np.mean(counts[counts > 0])   # the ids that occur, as RecBole's Counter counts them

    info = [set_color(dataset.dataset_name, "pink")]
    if dataset.uid_field:
        info += [set_color("The number of users", "blue") + f": {dataset.user_num}",
                 set_color("Average actions of users", "blue") + f": {average_actions(dataset.uid_field)}"]
    if dataset.iid_field:
        info += [set_color("The number of items", "blue") + f": {dataset.item_num}",
                 set_color("Average actions of items", "blue") + f": {average_actions(dataset.iid_field)}"]
    info.append(set_color("The number of inters", "blue") + f": {dataset.inter_num}")
    if dataset.uid_field and dataset.iid_field:
        info.append(set_color("The sparsity of the dataset", "blue") + f": {dataset.sparsity * 100}%")
    info.append(set_color("Remain Fields", "blue") + f": {list(dataset.field2type)}")
    return "\n".join(info)


def first_step_clock(model) -> dict:
    """``{"at": None}``, set to the time the first training step starts: the trainer's first call
    of ``model.calculate_loss`` (RecBole's ``_train_epoch`` takes the loss function once an
    epoch; the wrapper leaves the model after that call). The record's ``startup_seconds`` is
    from the start of ``run_cell`` to it: config, data, model and trainer, the first batch."""
    clock = {"at": None}
    loss = model.calculate_loss

    def first_call(interaction):
        if clock["at"] is None:
            clock["at"] = time()
            model.__dict__.pop("calculate_loss", None)
        return loss(interaction)

    model.calculate_loss = first_call
    return clock


def _test_after_training(config, marks, cell: dict) -> bool:
    """``test_after_training`` (false: the run never scores the test split, as the trials of a
    tuned comparison); refused with epoch marks or a missing-modality evaluation, which test."""
    scored = config["test_after_training"]
    if not isinstance(scored, bool):
        raise UsageError(f"test_after_training must be true or false, got {scored!r}")
    if not scored and (marks or cell.get("robustness")):
        raise UsageError("test_after_training: false scores no test split, but --marks (and a missing_modality "
                         "study) test the model: give one of them")
    return scored


def _plateau_settings(config, marks) -> dict | None:
    """``train_to: plateau``: validate every epoch and stop after ``plateau_patience`` validations
    without improvement (RecBole's ``stopping_step``); the step budget and the batch size are set
    once the training split's size is known (``_fit_batches_to_budget``). None for ``epochs``."""
    train_to = str(config["train_to"]).lower()
    if train_to not in ("epochs", "plateau"):
        raise UsageError(f"train_to must be 'epochs' or 'plateau', got {config['train_to']!r}")
    if train_to == "epochs":
        return None
    if marks:
        raise UsageError("--marks tests every model after fixed epochs; train_to: plateau stops each model on its "
                         "own validation plateau: give one of them")
    plateau = {"patience": int(config["plateau_patience"]), "budget": int(config["plateau_step_budget"]),
               "min_steps_per_epoch": int(config["plateau_min_steps_per_epoch"])}
    if min(plateau.values()) < 1:
        raise UsageError(f"plateau_patience, plateau_step_budget and plateau_min_steps_per_epoch must be >= 1, got {plateau}")
    config["train_to"] = "plateau"
    config["stopping_step"] = plateau["patience"] - 1   # RecBole stops once more than stopping_step fail
    config["eval_step"] = 1
    return plateau


def _fit_batches_to_budget(config, train_data, plateau: dict) -> None:
    """Lower ``train_batch_size`` (never raise it) so an epoch has at least
    ``plateau_min_steps_per_epoch`` optimizer steps on this training split, and allow as many
    epochs as the step budget covers. The values that ran are written back into the config."""
    rows = len(train_data._dataset)
    batch = min(int(config["train_batch_size"]), max(1, rows // plateau["min_steps_per_epoch"]))
    if batch != int(config["train_batch_size"]):
        config["train_batch_size"] = batch
        train_data.update_config(config)
    config["step_budget"] = plateau["budget"]
    config["epochs"] = max(1, -(-plateau["budget"] // len(train_data)))


def valid_plateau(history: list[dict], patience: int) -> dict | None:
    """Whether validation had stopped improving by the end: the epoch of the best validation score,
    the validations after it, and ``reached`` when at least ``patience`` came after it (a model
    whose best validation is among its last ``patience`` was still improving: undertrained)."""
    validated = [entry for entry in history if "valid" in entry and not entry.get("interrupted")]
    best = [entry for entry in validated if entry.get("best")]
    if not best:
        return None
    after = sum(1 for entry in validated if entry["epoch"] > best[-1]["epoch"])
    return {"best_epoch": int(best[-1]["epoch"]) + 1, "best_at_step": int(best[-1].get("steps", 0)),
            "validations_after_best": after, "patience": patience, "reached": after >= patience}


LOG_ROOT = Path("log")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}


def _init_log(config, run_id: str) -> str:
    """RecBole's log, in RecBole's format, to ``log/<model>/<model>-<dataset>-<run_id>.log``.

    RecBole's ``init_logger`` names its file after the start second and a hash of the config,
    so two runs started together in one folder would share a file; and inside a process that
    already has log handlers (pytest, a Ray worker running its second cell) it creates an empty
    file it never attaches. So the run sets up the same handlers itself: its own file named by
    the run id, replacing only a file handler of an earlier run (a file under ``log/``) and
    never touching anyone else's handlers or files."""
    import colorlog
    from colorama import init
    from recbole.utils.logger import RemoveColorFilter, log_colors_config

    init(autoreset=True)
    level = LEVELS.get(str(config["state"] or "info").lower(), logging.INFO)
    root = logging.getLogger()
    ours = LOG_ROOT.resolve()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve().is_relative_to(ours):
            root.removeHandler(handler)
            handler.close()
    if not root.handlers:
        console = logging.StreamHandler()
        console.setLevel(level)
        console.setFormatter(colorlog.ColoredFormatter("%(log_color)s%(asctime)-15s %(levelname)s  %(message)s",
                                                       "%d %b %H:%M", log_colors=log_colors_config))
        root.addHandler(console)
    path = LOG_ROOT / str(config["model"]) / f"{config['model']}-{config['dataset']}-{run_id}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)-15s %(levelname)s  %(message)s", "%a %d %b %Y %H:%M:%S"))
    handler.addFilter(RemoveColorFilter())
    root.addHandler(handler)
    root.setLevel(level)
    return str(path)


def _predictions(trainer, model, test_data, config, train_dataset) -> dict | None:
    """The test rows the final evaluation scored (raw ids), whether each row's item and user
    occur in the training split (``warm_item``, ``warm_user``), plus, for a model with
    ``hidden`` (MMa4CTR), its last hidden layer and raw input on a bounded, seeded sample of rows."""
    scored = trainer.last_scored
    if not scored:
        return None
    predictions = {name: np.asarray(values) for name, values in scored.items()}
    for column, field in (("user", config["USER_ID_FIELD"]), ("item", config["ITEM_ID_FIELD"])):
        if column in predictions:
            seen = np.unique(train_dataset.inter_feat[field].numpy())
            predictions[f"warm_{column}"] = np.isin(predictions[column], train_dataset.id2token(field, seen))
    if hasattr(model, "hidden") and hasattr(model, "concat_input"):
        import torch

        rows = len(predictions["score"])
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(rows, size=min(rows, HIDDEN_SAMPLE_ROWS), replace=False))
        dataset = test_data._dataset
        model.eval()
        with torch.no_grad():
            interaction = dataset[torch.as_tensor(sample)].to(config["device"])
            predictions["sample_index"] = sample
            predictions["hidden"] = model.hidden(interaction).cpu().numpy()
            predictions["raw_input"] = model.concat_input(interaction).cpu().numpy()
    return predictions


def _protocol_of(config, named: str | None) -> str:
    """The protocol the record states. A named protocol file that sets settings (paper, challenge)
    is that protocol; without one, or under ``honest`` (which sets nothing: the defaults), the
    effective settings say it: the paper's (profiles from all interactions, or the authors'
    positional cut), the challenge's day split, else honest."""
    if named and named != "honest":
        return named
    if config["profile_source"] == "all" or config["split_rule"] == "positional":
        return "paper"
    if config["split_rule"] == "day":
        return "challenge"
    return "honest"


def _split_of(config) -> dict:
    """The record's ``split``: how this run's rows were cut, as run (the report states it from
    here and never recomputes it)."""
    args = config["eval_args"] or {}
    return {"rule": config["split_rule"], "ratios": (args.get("split") or {}).get("RS"), "order": args.get("order"),
            "group_by": args.get("group_by"), "days": config["split_days"] if config["split_rule"] == "day" else None}


def _feature_summary(dataset) -> dict | None:
    if not hasattr(dataset, "mm_feature_fields"):
        return None
    return {
        "fusion": dataset.fusion,
        "profile_length": dataset.profile_length,
        "profile_source": dataset.profile_source,
        "train_profile": dataset.train_profile,
        "input_dims": {f: int(dataset.field2seqlen[f]) for f in dataset.mm_feature_fields},
        "items_without_features": dataset.items_without_features,
    }


def _data_summary(manifest: dict | None) -> dict | None:
    if not manifest:
        return None
    keep = ("source", "synthetic", "fingerprint", "item_recipe", "rows", "dropped", "label", "label_rate", "modality_dims", "settings")
    return {k: manifest.get(k) for k in keep}


def format_metrics(record: dict) -> str:
    lines = [f"{record['model']} on {record['dataset']} ({record['protocol']} protocol, {record['device']}, "
             f"{record['trainable_parameters']:,} trainable parameters, {record['epochs_run']} epochs, "
             f"{record['steps']:,} steps of {record['train_batch_size']:,} rows, stopped on {record['stopped_on']}, "
             f"train {record['train_seconds']:.1f} s, test {record['test_seconds']:.1f} s)"]
    for split in ("best_valid", "test"):
        metrics = record.get(split) or {}
        lines.append(f"  {split:<10} " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return "\n".join(lines)


def run_recbole_mma4ctr(model: str, dataset: str, config_files=None, overrides=None, marks=None,
                        protocol=None) -> dict:
    """A single run (no Ray): prepare the data if needed, run the cell, write its record into
    ``results_dir`` (failures too), print the metrics; returns the record (path in 'record_path')."""
    cell = make_cell(model, dataset, config_files, overrides, marks=marks, kind="run", protocol=protocol)
    results_dir = results_dir_of(cell)
    begun = time()
    try:
        record, predictions = run_cell(cell)
    except BaseException as error:
        write_record(failure_record(cell, f"{type(error).__name__}: {error}", time() - begun), results_dir)
        raise
    path = write_record(record, results_dir, predictions)
    record["record_path"] = str(path)
    say(format_metrics(record))
    return record
