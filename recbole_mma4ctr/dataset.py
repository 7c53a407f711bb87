"""MMa4CTRDataset: RecBole's Dataset plus the multimodal item and user features MMa4CTR reads.

Item side: the converter leaves one matrix per modality in ``<dataset>.mm.npz`` (raw item ids
plus ``visual`` / ``acoustic`` / ``textual``). On load they are aligned with RecBole's internal
item ids and fused (``fusion``, default the paper's ``vat_concat``) into the item field
``item_mm``. Fusion never looks at labels, so doing it on all items is safe.

User side: after RecBole has split the interactions, each user's profile per fused modality is
computed from the TRAINING split only (``profiles.user_profiles``) and injected as user fields
``profile_<modality>`` (float_seq of ``profile_length + 1`` values). Valid and test labels
therefore cannot reach the features. ``profile_source: all`` reproduces the authors' leaky
choice (profiles from every interaction) for protocol comparisons only.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from recbole.data.dataset import Dataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

from .fusion import fuse, fusion_modalities
from .profiles import user_profiles

ITEM_FIELD = "item_mm"


def profile_field(modality: str) -> str:
    return f"profile_{modality}"


class MMa4CTRDataset(Dataset):
    """A RecBole Dataset whose users carry train-only multimodal profiles and items a fused vector."""

    def __init__(self, config):
        super().__init__(config)
        self.fusion = config["fusion"] or "vat_concat"
        self.fused_modalities = fusion_modalities(self.fusion)
        self.profile_length = int(config["profile_length"] if config["profile_length"] is not None else 21)
        self.profile_source = config["profile_source"] or "train"
        if self.profile_source not in ("train", "all"):
            raise ValueError(f"profile_source must be 'train' or 'all', got {self.profile_source!r}")
        self.modality_matrices, self.items_without_features = self._load_modalities()
        self.item_matrix = self._fuse_items()
        self.mm_feature_fields = [profile_field(m) for m in self.fused_modalities] + [ITEM_FIELD]

    def _modality_file(self) -> str:
        name = self.config["mm_file"] or f"{self.dataset_name}.mm.npz"
        return name if os.path.isabs(name) else os.path.join(self.dataset_path, name)

    def _load_modalities(self):
        """Per-modality matrices indexed by internal item id (row 0, RecBole's padding, is zeros)."""
        path = self._modality_file()
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path}: modality file not found. MMa4CTR needs per-modality item matrices; "
                f"run `python -m recbole_mma4ctr.prepare` for this dataset first"
            )
        with np.load(path, allow_pickle=False) as archive:
            raw_ids = archive["item_id"].astype(str)
            matrices = {name: archive[name] for name in archive.files if name != "item_id"}
        missing = [m for m in self.fused_modalities if m not in matrices]
        if missing:
            raise ValueError(f"{path}: fusion {self.fusion!r} needs modalities {missing}; the file has {sorted(matrices)}")
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
        without = int((~covered[1:]).sum())
        if without:
            self.logger.warning(f"{without} of {self.item_num - 1} items have no modality vectors; they get zeros")
        return aligned, without

    def _fuse_items(self) -> np.ndarray:
        parts = {name: self.modality_matrices[name][1:] for name in self.fused_modalities}
        fused = fuse(parts, self.fusion, max_dim=int(self.config["fusion_max_dim"] or 128), seed=int(self.config["seed"] or 0))
        return np.vstack([np.zeros((1, fused.shape[1]), dtype=np.float32), fused.astype(np.float32)])

    def build(self):
        datasets = super().build()
        source = datasets[0].inter_feat if self.profile_source == "train" else self.inter_feat
        profiles = self.compute_profiles(source)
        self._inject(FeatureSource.USER, profiles, datasets)
        self._inject(FeatureSource.ITEM, {ITEM_FIELD: self.item_matrix}, datasets)
        dims = {name: int(matrix.shape[1]) for name, matrix in profiles.items()}
        self.logger.info(
            f"MMa4CTR features: fusion {self.fusion} -> {ITEM_FIELD} {self.item_matrix.shape[1]} dims; "
            f"profiles from the {self.profile_source} interactions {dims}"
        )
        return datasets

    def compute_profiles(self, interactions) -> dict[str, np.ndarray]:
        """Profiles of every user from the given interactions (the training split by default)."""
        users = interactions[self.uid_field].numpy()
        items = interactions[self.iid_field].numpy()
        labels = interactions[self.label_field].numpy()
        device_field = self.config["profile_device_field"]
        devices = interactions[device_field].numpy() if device_field and device_field in interactions else None
        return {
            profile_field(m): user_profiles(users, items, labels, self.modality_matrices[m], self.user_num,
                                            self.profile_length, devices)
            for m in self.fused_modalities
        }

    def _inject(self, source: FeatureSource, columns: dict[str, np.ndarray], datasets) -> None:
        """Add float_seq columns to the user or item features of this dataset and its splits."""
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
