"""Model, dataset and trainer lookup that knows MMa4CTR and falls back to RecBole's.

RecBole's own ``get_model`` only searches ``recbole.model.*`` and ``create_dataset`` only
``recbole.data.dataset``; a plugin brings its own lookups (the shape RecBole-GNN uses).
Importing this module never imports ray (``recbole.quick_start`` would).
"""

from __future__ import annotations


def get_model(model_name: str):
    from .baselines import switch_off_anomaly_detection

    model_class = _get_model(model_name)
    # importing any RecBole sequential model turns torch's anomaly detection on for the process
    switch_off_anomaly_detection()
    return model_class


def _get_model(model_name: str):
    if model_name == "MMa4CTR":
        from .model import MMa4CTR

        return MMa4CTR
    if model_name == "GCSAN":
        from .baselines import GCSAN  # RecBole's GCSAN with a vectorised session graph

        return GCSAN
    from recbole.utils import get_model as recbole_get_model

    return recbole_get_model(model_name)


def create_dataset(config):
    """MMa4CTRDataset for MMa4CTR; for sequential models under labeled evaluation a sequential
    dataset that keeps every interaction in place, so they split exactly like every other model
    (``baselines.py``); RecBole's own dataset otherwise. Atomic files are read with pandas' C
    engine (``compat.building_dataset``)."""
    from .compat import building_dataset

    with building_dataset():
        return _create_dataset(config)


def _create_dataset(config):
    if config["model"] == "MMa4CTR":
        from .dataset import MMa4CTRDataset

        return MMa4CTRDataset(config)
    from recbole.utils import ModelType

    from .baselines import LabeledDIENDataset, LabeledSequentialDataset, labeled_evaluation

    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and labeled_evaluation(config):
        import recbole.data.dataset as recbole_datasets

        own = getattr(recbole_datasets, f"{config['model']}Dataset", None)
        if own is None:
            return LabeledSequentialDataset(config)
        if own is recbole_datasets.DIENDataset:
            return LabeledDIENDataset(config)
    from recbole.data import create_dataset as recbole_create_dataset

    return recbole_create_dataset(config)


def get_trainer(model_type, model_name: str):
    """Our Trainer (weights-only checkpoints) wherever RecBole would use its plain Trainer."""
    from recbole.trainer import Trainer as RecBoleTrainer
    from recbole.utils import get_trainer as recbole_get_trainer

    from .trainer import Trainer

    if model_name == "MMa4CTR":
        return Trainer
    trainer_class = recbole_get_trainer(model_type, model_name)
    if trainer_class is RecBoleTrainer:
        return Trainer
    return trainer_class
