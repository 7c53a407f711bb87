"""Model, dataset and trainer lookup that knows MMa4CTR and falls back to RecBole's.

RecBole's own ``get_model`` only searches ``recbole.model.*`` and ``create_dataset`` only
``recbole.data.dataset``; a plugin brings its own lookups (the shape RecBole-GNN uses).
Importing this module never imports ray (``recbole.quick_start`` would).
"""

from __future__ import annotations

from .compat import building_dataset
from .data.dataset import MMa4CTRDataset
from .data.feature_fair import create_feature_fair_dataset
from .data.paper_split import recbole_dataset
from .model import multitask as multitask_models
from .model.baselines import (GCSAN, labeled_evaluation, LabeledDIENDataset, LabeledSequentialDataset,
                              switch_off_anomaly_detection)
from .model.feature_fair import check_variant, CONTEXT_KIND, lean_model_class, split_name
from .model.mma4ctr import MMa4CTR
from .model.tasks import CONTEXT_MODELS, is_multitask, load_action_columns, MULTITASK_MODELS, SINGLE_TASK_OF
from .trainer import Trainer


OWN_MODELS = ("MMa4CTR",) + MULTITASK_MODELS
RECBOLE_MODEL_KINDS = ("general_recommender", "context_aware_recommender", "sequential_recommender",
                       "knowledge_aware_recommender", "exlib_recommender")
EXTERNAL_LIBRARIES = {"lightgbm": "lightgbm", "xgboost": "xgboost"}


def recbole_model_files() -> dict[str, str]:
    """RecBole's model module names (lower-case model names) -> their kind, found without
    importing them (importing ``exlib_recommender`` needs lightgbm and xgboost)."""
    import importlib.util
    import os

    root = importlib.util.find_spec("recbole.model").submodule_search_locations[0]
    found = {}
    for kind in RECBOLE_MODEL_KINDS:
        folder = os.path.join(root, kind)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if name.endswith(".py") and not name.startswith("_"):
                found.setdefault(name[:-3], kind)
    return found


def check_model(model_name: str) -> str:
    """Refuse a model name neither this plugin nor RecBole 1.2.1 has, with a message that says so.

    ``<Model>+mm`` (``feature_fair.py``) is accepted where the base model embeds item features."""

    base, feature_fair = split_name(model_name)
    if feature_fair:
        check_model(base)
        kind = CONTEXT_KIND if base in CONTEXT_MODELS else recbole_model_files().get(base.lower())
        check_variant(model_name, base, kind)
        return model_name
    if model_name in OWN_MODELS:
        return model_name
    kind = recbole_model_files().get(model_name.lower())
    if kind is None:
        raise ValueError(f"unknown model {model_name!r}: not {', '.join(OWN_MODELS)} and not a RecBole 1.2.1 model "
                         f"(e.g. BPR, FPMC, NGCF, LightGCN, BERT4Rec, GCSAN, DIN, DIEN, DeepFM)")
    library = EXTERNAL_LIBRARIES.get(model_name.lower())
    if kind == "exlib_recommender" and library:
        import importlib.util

        if importlib.util.find_spec(library) is None:
            raise ValueError(f"model {model_name!r} needs the {library} package: pip install {library}")
    return model_name


def get_model(model_name: str):
    """The model class; for ``<Model>+mm`` RecBole's ``<Model>`` (the features come with the dataset)."""
    check_model(model_name)
    base, feature_fair = split_name(model_name)
    model_class = _get_model(base)
    if feature_fair:
        model_class = lean_model_class(model_class)
    # importing any RecBole sequential model turns torch's anomaly detection on for the process
    switch_off_anomaly_detection()
    return model_class


def _get_model(model_name: str):
    if model_name == "MMa4CTR":
        return MMa4CTR
    if model_name in MULTITASK_MODELS:

        return getattr(multitask_models, model_name)
    if model_name == "GCSAN":
        return GCSAN
    import importlib

    module = importlib.import_module(f"recbole.model.{recbole_model_files()[model_name.lower()]}.{model_name.lower()}")
    if not hasattr(module, model_name):
        spelled = [name for name in dir(module) if name.lower() == model_name.lower()]
        raise ValueError(f"unknown model {model_name!r}" + (f": model names are case-sensitive, did you mean {spelled[0]}?"
                                                            if spelled else ""))
    return getattr(module, model_name)


def create_dataset(config):
    """MMa4CTRDataset for MMa4CTR (and MMa4CTRMultiTask); a multi-task model's action columns
    loaded too (``multitask.load_action_columns``); for a ``+mm`` name (``config['feature_fair']``, set by
    ``config.build_config``) the base model's dataset with MMa4CTR's item features
    (``feature_fair.py``); for sequential models under labeled evaluation a sequential
    dataset that keeps every interaction in place, so they split exactly like every other model
    (``baselines.py``); RecBole's own dataset otherwise. Atomic files are read with pandas' C
    engine, timestamps exact for RecBole's float32 (``compat.building_dataset``)."""
    with building_dataset(config["TIME_FIELD"]):
        return _create_dataset(config)


def _create_dataset(config):
    if is_multitask(config["model"]):
        load_action_columns(config)
    if config["feature_fair"]:
        return create_feature_fair_dataset(config)
    if SINGLE_TASK_OF.get(config["model"], config["model"]) == "MMa4CTR":

        return MMa4CTRDataset(config)
    from recbole.utils import ModelType

    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and labeled_evaluation(config):
        import recbole.data.dataset as recbole_datasets

        own = getattr(recbole_datasets, f"{config['model']}Dataset", None)
        if own is None:
            return LabeledSequentialDataset(config)
        if own is recbole_datasets.DIENDataset:
            return LabeledDIENDataset(config)

    return recbole_dataset(config)


def get_trainer(model_type, model_name: str):
    """Our Trainer (weights-only checkpoints) wherever RecBole would use its plain Trainer."""
    from recbole.trainer import Trainer as RecBoleTrainer
    from recbole.utils import get_trainer as recbole_get_trainer


    if SINGLE_TASK_OF.get(model_name, model_name) == "MMa4CTR":
        return Trainer
    trainer_class = recbole_get_trainer(model_type, model_name)
    if trainer_class is RecBoleTrainer:
        return Trainer
    return trainer_class
