"""One run: prepare the data if needed, train, validate, test, write the result record.

The same path serves MMa4CTR and every RecBole baseline; only the model (and, for MMa4CTR,
the dataset class) differs, so every model sees the same atomic files, split and metrics.
"""

from __future__ import annotations

import warnings
from logging import getLogger
from pathlib import Path
from time import time

from .config import build_config
from .predictions import save_test_predictions
from .record import device_name, plain, run_stem, versions, write_record
from .utils import create_dataset, get_model, get_trainer


def say(message: str) -> None:
    print(message, flush=True)


def run_recbole_mma4ctr(model="MMa4CTR", dataset="wechat", config_files=None, overrides=None, saved=True,
                        marks=None, record_stem=None, extra_record=None) -> dict:
    """Train and evaluate one model; returns the result record (with its path under 'record_path').

    ``marks`` (e.g. [10, 20, 30, 50]): train max(marks) epochs without early stopping and test
    the current weights after every epoch; the record keeps every epoch's test metrics and
    points out the marks. ``record_stem`` names the record file (default: model-dataset-time).
    The test predictions (user, item, timestamp, label, score of every test pair) are saved
    next to the record as ``<stem>.predictions.npz``.
    """
    overrides = dict(overrides or {})
    if marks:
        marks = sorted({int(m) for m in marks})
        overrides["epochs"] = str(max(marks))
        overrides["stopping_step"] = str(max(marks) + 1)
    from recbole.data import data_preparation
    from recbole.utils import init_logger, init_seed

    from .prepare.sources import ensure_dataset

    # RecBole 1.2.1 on pandas 2 / torch 2.13 emits FutureWarnings (inplace fillna, amp.GradScaler)
    # on every epoch; they are about RecBole's code, not the user's, and drown the progress.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\.|$)")
    config = build_config(model, dataset, config_files, overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    manifest = ensure_dataset(config)
    say(f"device: {device_name(config['device'])}")

    dataset_obj = create_dataset(config)
    logger.info(dataset_obj)
    train_data, valid_data, test_data = data_preparation(config, dataset_obj)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_class = get_model(config["model"])
    model_obj = model_class(config, train_data._dataset).to(config["device"])
    logger.info(model_obj)
    parameters = sum(p.numel() for p in model_obj.parameters() if p.requires_grad)

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    test_by_epoch = []

    def test_each_epoch(epoch_idx, valid_score):
        if marks:
            started_test = time()
            result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
            test_by_epoch.append({"epoch": epoch_idx + 1, "seconds": round(time() - started_test, 3), **plain(result)})
            logger.info(f"test after epoch {epoch_idx + 1}: {plain(result)}")
        return False

    started = time()
    best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=saved, show_progress=config["show_progress"],
                                               callback_fn=test_each_epoch)
    fit_seconds = time() - started
    started = time()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    test_seconds = time() - started

    squashed = bool(getattr(trainer, "scores_squashed", False))
    record = {
        "status": "ok",
        "model": config["model"],
        "dataset": config["dataset"],
        "protocol": "paper" if config["profile_source"] == "all" or (config["eval_args"] or {}).get("group_by") == "user" else "honest",
        "best_valid": plain(best_valid),
        "best_valid_score": plain(best_valid_score),
        "test": plain(test_result),
        "epochs_run": getattr(trainer, "epochs_run", None),
        "history": getattr(trainer, "history", None),
        "interrupts": getattr(trainer, "interrupts", None),
        "train_seconds": round(getattr(trainer, "train_seconds", fit_seconds), 3),
        "fit_seconds": round(fit_seconds, 3),
        "test_seconds": round(test_seconds, 3),
        "marks": marks or None,
        "test_by_epoch": test_by_epoch or None,
        "logloss_on": "sigmoid(score)" if squashed else "probability",
        "trainable_parameters": int(parameters),
        "device": device_name(config["device"]),
        "features": _feature_summary(dataset_obj),
        "data": _data_summary(manifest),
        "split_sizes": {"train": len(train_data._dataset), "valid": len(valid_data._dataset), "test": len(test_data._dataset)},
        "config": plain({k: v for k, v in config.final_config_dict.items()}),
        "versions": versions(),
    }
    record.update(extra_record or {})
    stem = record_stem or run_stem(config["model"], config["dataset"])
    record["predictions"] = save_test_predictions(trainer, test_data, config, Path(config["results_dir"]) / f"{stem}.predictions.npz")
    path = write_record(record, config["results_dir"], stem)
    record["record_path"] = str(path)
    say(format_metrics(record))
    return record


def _feature_summary(dataset_obj) -> dict | None:
    if not hasattr(dataset_obj, "mm_feature_fields"):
        return None
    return {
        "fusion": dataset_obj.fusion,
        "profile_length": dataset_obj.profile_length,
        "profile_source": dataset_obj.profile_source,
        "train_profile": dataset_obj.train_profile,
        "input_dims": {f: int(dataset_obj.field2seqlen[f]) for f in dataset_obj.mm_feature_fields},
        "items_without_features": dataset_obj.items_without_features,
    }


def _data_summary(manifest: dict | None) -> dict | None:
    if not manifest:
        return None
    keep = ("source", "synthetic", "fingerprint", "item_recipe", "rows", "dropped", "label", "label_rate", "modality_dims", "settings")
    return {k: manifest.get(k) for k in keep}


def format_metrics(record: dict) -> str:
    lines = [f"{record['model']} on {record['dataset']} ({record['protocol']} protocol, {record['device']}, "
             f"{record['trainable_parameters']:,} trainable parameters, {record['epochs_run']} epochs, "
             f"train {record['train_seconds']:.1f} s, test {record['test_seconds']:.1f} s)"]
    for split in ("best_valid", "test"):
        metrics = record.get(split) or {}
        lines.append(f"  {split:<10} " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return "\n".join(lines)
