"""The multimodal item and user features, built once for every model that reads them.

One path for MMa4CTR (``dataset.MMa4CTRDataset``) and for the feature-fair baselines
(``feature_fair``: ``DIN+mm``, ``DeepFM+mm`` ...), so both see the same numbers:

1. load ``<dataset>.mm.npz`` (``mm_file``), checked by ``prepare.byo.check_modality_archive``
   (string ids, distinct, one finite row per id) and for coverage
   (``min_item_feature_coverage`` of the interacted items must have a vector);
2. align every modality matrix with RecBole's internal item ids (row 0, RecBole's padding item,
   and items without a vector are zeros);
3. fuse the modalities the ``fusion`` names (``fusion.fuse``; ``fusion_max_dim``,
   ``fusion_modality_max_dim``) into the item matrix ``item_mm``. Fusion never looks at labels,
   so doing it on all items is safe;
4. on request, each user's train-only profile per fused modality (``profiles.fit_user_profiles``,
   ``profile_length`` L + the device), computed after RecBole's split.

The settings are MMa4CTR's (``properties/model/MMa4CTR.yaml``, their one home); a ``+mm``
baseline's config layers exactly those keys in (``config.FEATURE_KEYS``).
:class:`ModalityFeatures` is a mixin for a RecBole ``Dataset`` subclass: it needs
``field2token_id``, ``iid_field``, ``item_num`` and the still-unbuilt ``inter_feat``.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

from ..errors import InputError, MissingInputError, UsageError
from ..fusion import fuse, fusion_modalities
from ..prepare.byo import check_modality_archive, coverage_problem
from ..prepare.sources import CONVERTERS
from ..profiles import fit_user_profiles, FittedProfiles
from ..settings import setting

ITEM_FIELD = "item_mm"
MODEL_YAML = "properties/model/MMa4CTR.yaml"


def missing_modality_file(path, model: str, dataset: str) -> str:
    """Why a run stops without ``<dataset>.mm.npz``, and how to make one: a converted dataset's
    comes from its converter; a bring-your-own one's is the user's to write."""
    if dataset in CONVERTERS:
        return (f"{path}: modality file not found. {model} needs per-modality item matrices; convert the dataset "
                f"again (python -m recbole_mma4ctr.prepare {dataset} --raw RAW_DIR --out {os.path.dirname(path)})")
    return (f"{path}: modality file not found. {model} needs the items' modality matrices there: a NumPy archive "
            f"(np.savez) with item_id (strings, the .inter's item_id tokens) and visual, acoustic, textual "
            f"(float32, one row per id, values in [0, 1]); see docs/byo_dataset.md, or give another file with "
            f"--mm_file=PATH")


def profile_field(modality: str) -> str:
    return f"profile_{modality}"


class ModalityFeatures:
    """Dataset mixin: the modality matrices, the fused item matrix and the train-only profiles."""

    def _init_modalities(self, config) -> None:
        """Load, align and fuse (steps 1-3 of the module docstring); call after RecBole's __init__."""
        self.fusion = setting(config, "fusion", MODEL_YAML)
        self.fused_modalities = fusion_modalities(self.fusion)
        self.profile_length = int(setting(config, "profile_length", MODEL_YAML))
        self.modality_matrices, self.items_without_features = self._load_modalities()
        self.item_matrix = self.fuse_items(self.modality_matrices)

    def _checked_profile_source(self, config) -> str:
        """``profile_source``: ``train`` (honest) or ``all`` (the authors' leaky choice)."""
        source = setting(config, "profile_source", MODEL_YAML)
        if source not in ("train", "all"):
            raise UsageError(f"profile_source must be 'train' or 'all', got {source!r}")
        return source

    def _modality_file(self) -> str:
        name = setting(self.config, "mm_file") or f"{self.dataset_name}.mm.npz"  # ~: the dataset's own
        return name if os.path.isabs(name) else os.path.join(self.dataset_path, name)

    def _load_modalities(self):
        """Per-modality matrices indexed by internal item id (row 0, RecBole's padding, is zeros).

        The archive is checked first (``prepare.byo.check_modality_archive``: string ids, distinct,
        one finite row per id); then fewer than ``min_item_feature_coverage`` of the interacted
        items with a vector is an error (ids that match no item would train on zeros)."""
        path = self._modality_file()
        if not os.path.exists(path):
            raise MissingInputError(missing_modality_file(path, self.config["model"], self.dataset_name))
        raw_ids, matrices = check_modality_archive(path)
        missing = [m for m in self.fused_modalities if m not in matrices]
        if missing:
            raise InputError(f"{path}: fusion {self.fusion!r} needs modalities {missing}; the file has {sorted(matrices)}")
        token_to_id = self.field2token_id[self.iid_field]
        internal = np.array([token_to_id.get(token, -1) for token in raw_ids], dtype=np.int64)
        known = internal >= 0
        aligned = {}
        for name, matrix in matrices.items():
            table = np.zeros((self.item_num, matrix.shape[1]), dtype=np.float32)
            table[internal[known]] = matrix[known]
            aligned[name] = table
        covered = np.zeros(self.item_num, dtype=bool)
        covered[internal[known]] = True
        interacted = np.unique(np.asarray(self.inter_feat[self.iid_field]))  # a DataFrame until build()
        problem = coverage_problem(path, int(covered[interacted].sum()), len(interacted),
                                   float(setting(self.config, "min_item_feature_coverage")))
        if problem is not None:
            raise problem
        without = int((~covered[1:]).sum())
        if without:
            self.logger.warning(f"{without} of {self.item_num - 1} items have no modality vectors; they get zeros")
        return aligned, without

    def fuse_items(self, matrices: dict[str, np.ndarray]) -> np.ndarray:
        """The fused item matrix (row 0, the padding item, zeros) of per-modality matrices indexed
        by internal item id, with this dataset's fusion settings."""
        parts = {name: matrices[name][1:] for name in self.fused_modalities}
        fused = fuse(parts, self.fusion, max_dim=int(setting(self.config, "fusion_max_dim", MODEL_YAML)),
                     modality_max_dim=setting(self.config, "fusion_modality_max_dim", MODEL_YAML))
        return np.vstack([np.zeros((1, fused.shape[1]), dtype=np.float32), fused.astype(np.float32)])

    def compute_profiles(self, interactions) -> dict[str, FittedProfiles]:
        """Profiles of every user (with counts and scaler) from the given interactions."""
        users = interactions[self.uid_field].numpy()
        items = interactions[self.iid_field].numpy()
        labels = interactions[self.label_field].numpy()
        device_field = setting(self.config, "profile_device_field", MODEL_YAML)
        devices = interactions[device_field].numpy() if device_field and device_field in interactions else None
        return {
            profile_field(m): fit_user_profiles(users, items, labels, self.modality_matrices[m], self.user_num,
                                                self.profile_length, devices)
            for m in self.fused_modalities
        }

    def _inject(self, source: FeatureSource, columns: dict[str, np.ndarray], datasets) -> None:
        """Add float_seq columns (``[n, d]`` values, or ``[n, d, 2]`` RecBole's (value, index)
        pairs of a numerical feature) to the user or item features of this dataset and its splits."""
        id_field, count = (self.uid_field, self.user_num) if source == FeatureSource.USER else (self.iid_field, self.item_num)
        attribute = "user_feat" if source == FeatureSource.USER else "item_feat"
        for name, matrix in columns.items():
            self.set_field_property(name, FeatureType.FLOAT_SEQ, source, int(matrix.shape[1]))
        tensors = {name: torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)) for name, matrix in columns.items()}
        features = getattr(self, attribute)
        if features is None:
            features = Interaction({id_field: torch.arange(count), **tensors})
        else:
            features.update(Interaction(tensors))
        for dataset in (self, *datasets):
            setattr(dataset, attribute, features)
