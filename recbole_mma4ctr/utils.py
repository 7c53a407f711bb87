"""Model, dataset and trainer lookup that knows MMa4CTR and falls back to RecBole's.

RecBole's own ``get_model`` only searches ``recbole.model.*`` and ``create_dataset`` only
``recbole.data.dataset``; a plugin brings its own lookups (the shape RecBole-GNN uses).
Importing this module never imports ray (``recbole.quick_start`` would).
"""

from __future__ import annotations

from contextlib import contextmanager


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


class _CEnginePandas:
    """pandas, except that ``read_csv`` asked for the python engine with a one-character
    separator uses the C engine (exact float parsing, ``round_trip``) instead."""

    def __init__(self, pandas):
        self._pandas = pandas

    def __getattr__(self, name):
        return getattr(self._pandas, name)

    def read_csv(self, *args, **kwargs):
        separator = kwargs.get("delimiter") or kwargs.get("sep") or ","
        if kwargs.get("engine") == "python" and len(separator) == 1:
            kwargs.update(engine="c", float_precision="round_trip")
        return self._pandas.read_csv(*args, **kwargs)


@contextmanager
def c_engine_atomic_reads():
    """RecBole 1.2.1 reads atomic files with pandas' python engine: 27 s for WeChat's 7 M-row
    ``.inter`` here, 3.5 s with the C engine, the same frame. While a dataset is built, RecBole's
    dataset module sees a pandas whose ``read_csv`` picks the C engine (multi-character
    separators keep the python engine, which alone supports them)."""
    import recbole.data.dataset.dataset as dataset_module

    original = dataset_module.pd
    dataset_module.pd = _CEnginePandas(original)
    try:
        yield
    finally:
        dataset_module.pd = original


def create_dataset(config):
    """MMa4CTRDataset for MMa4CTR; for sequential models under labeled evaluation a sequential
    dataset that keeps every interaction in place, so they split exactly like every other model
    (``baselines.py``); RecBole's own dataset otherwise. Atomic files are read with pandas' C
    engine (``c_engine_atomic_reads``)."""
    with c_engine_atomic_reads():
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
