"""The dataset half of the feature-fair baselines ``<Model>+mm`` (the model half, and the whole
story, in ``model/feature_fair.py``): ``item_mm`` and the train-only profiles as embedded
float_seq features of the dataset class the base model already uses, with position indices.
Defaults: ``properties/feature_fair.yaml``.
"""

from __future__ import annotations

import numpy as np
from recbole.utils import FeatureSource

from ..errors import UsageError
from ..fusion import fusion_modalities
from ..model.baselines import labeled_evaluation, LabeledDIENDataset, LabeledSequentialDataset
from ..model.feature_fair import MM_SUFFIX
from ..settings import setting
from .item_modalities import ITEM_FIELD, ModalityFeatures, MODEL_YAML, profile_field
from .paper_split import PositionalSplitDataset

SETTINGS_FILE = "properties/feature_fair.yaml"
INDEX_RULES = ("position", "recbole")


def float_seq_pairs(matrix: np.ndarray, rule: str) -> np.ndarray:
    """``[n, d]`` values -> RecBole's ``[n, d, 2]`` (value, index) pairs of a numerical float_seq
    feature: index j + 1 at position j (``position``) or 1 everywhere (``recbole``, its stock)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    n, d = matrix.shape
    if rule == "position":
        index = np.broadcast_to(np.arange(1, d + 1, dtype=np.float32), (n, d))
    elif rule == "recbole":
        index = np.ones((n, d), dtype=np.float32)
    else:
        raise UsageError(f"mm_float_seq_index must be one of {', '.join(INDEX_RULES)}; got {rule!r}")
    return np.stack([matrix, index], axis=-1)


def bucket_count(width: int, rule: str) -> int:
    """Rows of the embedding table RecBole builds for the field (``field2bucketnum``)."""
    return width + 1 if rule == "position" else 2


class FeatureFair(ModalityFeatures):
    """Dataset mixin: ``item_mm`` (and optionally the train-only profiles) as embedded float_seq
    features of a RecBole baseline (module docstring)."""

    def __init__(self, config):
        mm_user_profiles = setting(config, "mm_user_profiles", SETTINGS_FILE)
        if not isinstance(mm_user_profiles, bool):
            raise UsageError(f"mm_user_profiles must be true or false; got {mm_user_profiles!r}")
        self.index_rule = setting(config, "mm_float_seq_index", SETTINGS_FILE)
        if self.index_rule not in INDEX_RULES:
            raise UsageError(f"mm_float_seq_index must be one of {', '.join(INDEX_RULES)}; got {self.index_rule!r}")
        # RecBole would try to discretize a listed field at load time, before it exists
        ours = {ITEM_FIELD} | {profile_field(m) for m in fusion_modalities(setting(config, "fusion", MODEL_YAML))}
        config["numerical_features"] = [f for f in (config["numerical_features"] or []) if f not in ours]
        super().__init__(config)
        self._init_modalities(config)
        self.profile_source = self._checked_profile_source(config)
        self.train_profile = "inclusive"
        self.user_profiles = mm_user_profiles
        profiles = [profile_field(m) for m in self.fused_modalities] if mm_user_profiles else []
        self.mm_feature_fields = profiles + [ITEM_FIELD]
        config["numerical_features"] = list(config["numerical_features"]) + self.mm_feature_fields
        if mm_user_profiles and config["model"] == "DIN":
            self.logger.warning("mm_user_profiles with DIN: RecBole's DIN embeds user features but does not feed "
                                "them to its DNN, so the profiles do not change its scores")

    def build(self):
        datasets = super().build()
        profiles = {}
        if self.user_profiles:
            source = datasets[0].inter_feat if self.profile_source == "train" else self.inter_feat
            profiles = {name: fitted.profiles for name, fitted in self.compute_profiles(source).items()}
            self._add_numerical(FeatureSource.USER, profiles, datasets)
        self._add_numerical(FeatureSource.ITEM, {ITEM_FIELD: self.item_matrix}, datasets)
        self.logger.info(
            f"{self.config['model']}{MM_SUFFIX} features: fusion {self.fusion} -> {ITEM_FIELD} "
            f"{self.item_matrix.shape[1]} dims, embedded with {self.index_rule} indices; "
            + (f"profiles from the {self.profile_source} interactions {sorted(profiles)}" if profiles else "no user profiles"))
        return datasets

    def _add_numerical(self, source: FeatureSource, columns: dict[str, np.ndarray], datasets) -> None:
        self._inject(source, {name: float_seq_pairs(matrix, self.index_rule) for name, matrix in columns.items()}, datasets)
        for name, matrix in columns.items():
            self.field2bucketnum[name] = bucket_count(int(matrix.shape[1]), self.index_rule)


class FeatureFairDataset(FeatureFair, PositionalSplitDataset):
    """RecBole's plain Dataset (context-aware models) plus ``item_mm``."""


class FeatureFairSequentialDataset(FeatureFair, LabeledSequentialDataset):
    """The labeled sequential dataset (DIN) plus ``item_mm``."""


class FeatureFairDIENDataset(FeatureFair, LabeledDIENDataset):
    """The labeled DIEN dataset (negative histories) plus ``item_mm``."""


def create_feature_fair_dataset(config):
    """The +mm dataset for ``config`` (``config['model']`` is the base model)."""
    from recbole.utils import ModelType

    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        if not labeled_evaluation(config):
            raise UsageError(f"{config['model']}{MM_SUFFIX} runs on the labeled split only (eval_args mode: labeled)")
        return FeatureFairDIENDataset(config) if config["model"] == "DIEN" else FeatureFairSequentialDataset(config)
    return FeatureFairDataset(config)
