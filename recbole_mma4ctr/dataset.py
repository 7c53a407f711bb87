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

Training rows: a training row's own label is inside its user's train-only profile, which valid
and test rows never enjoy. With ``train_profile: leave_one_out`` the TRAINING split's batches
carry, for each row, its user's profile without that row (``profiles.leave_one_out``, through
the same fitted scaler; a user whose only training row it is gets the cold-start columns). These
profiles are computed once per training row when the splits are built
(``batches.leave_one_out_rows``) and gathered with the row, so the model is unchanged and an
epoch does no profile arithmetic. Valid, test and prediction batches keep the stored profiles.
``inclusive`` keeps the stored profiles for training rows too, and is forced with
``profile_source: all`` (the paper's setup).
The device column is kept as is: it is not a label.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from recbole.data.dataset import Dataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

from .batches import gather, leave_one_out_rows, row_index
from .defaults import setting
from .errors import InputError, MissingInputError, UsageError
from .fusion import fuse, fusion_modalities
from .paper_split import PositionalSplit
from .prepare.byo import check_modality_archive, coverage_problem
from .profiles import FittedProfiles, fit_user_profiles, removal_terms

ITEM_FIELD = "item_mm"
TRAIN_PROFILES = ("leave_one_out", "inclusive")
MODEL_YAML = "properties/model/MMa4CTR.yaml"


def profile_field(modality: str) -> str:
    return f"profile_{modality}"


class MMa4CTRDataset(PositionalSplit, Dataset):
    """A RecBole Dataset whose users carry train-only multimodal profiles and items a fused vector."""

    def __init__(self, config):
        super().__init__(config)
        self.fusion = setting(config, "fusion", MODEL_YAML)
        self.fused_modalities = fusion_modalities(self.fusion)
        self.profile_length = int(setting(config, "profile_length", MODEL_YAML))
        self.profile_source = setting(config, "profile_source", MODEL_YAML)
        if self.profile_source not in ("train", "all"):
            raise UsageError(f"profile_source must be 'train' or 'all', got {self.profile_source!r}")
        self.train_profile = self._resolve_train_profile(config)
        self.row_profiles = None  # training split only (leave_one_out): field -> [rows, L + 1], set by build()
        self.modality_matrices, self.items_without_features = self._load_modalities()
        self.item_matrix = self._fuse_items()
        self.mm_feature_fields = [profile_field(m) for m in self.fused_modalities] + [ITEM_FIELD]

    def _resolve_train_profile(self, config) -> str:
        """The training rows' profile kind; the paper's leaky protocol (profile_source all) is inclusive.

        The effective value is written back into the config so the run record states what ran.
        """
        requested = setting(config, "train_profile", MODEL_YAML)
        if requested not in TRAIN_PROFILES:
            raise UsageError(f"train_profile must be one of {TRAIN_PROFILES}, got {requested!r}")
        sampling = (setting(config, "train_neg_sample_args") or {}).get("distribution", "none") not in ("none", None)
        if requested == "leave_one_out" and sampling and self.profile_source != "all":
            # a sampled negative copies its positive row's (corrected) profile: that row is not left out of it
            raise UsageError("train_profile leave_one_out assumes every training row is an observed interaction; "
                             "with train_neg_sample_args set, use train_profile: inclusive (or switch sampling off)")
        effective = "inclusive" if self.profile_source == "all" else requested
        if effective != requested:
            self.logger.info("profile_source all (the paper's protocol): training rows keep inclusive profiles")
        config["train_profile"] = effective
        return effective

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
            raise MissingInputError(
                f"{path}: modality file not found. MMa4CTR needs per-modality item matrices; "
                f"run `python -m recbole_mma4ctr.prepare` for this dataset first"
            )
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

    def _fuse_items(self) -> np.ndarray:
        parts = {name: self.modality_matrices[name][1:] for name in self.fused_modalities}
        fused = fuse(parts, self.fusion, max_dim=int(setting(self.config, "fusion_max_dim", MODEL_YAML)),
                     seed=int(setting(self.config, "seed")),
                     modality_max_dim=setting(self.config, "fusion_modality_max_dim", MODEL_YAML))
        return np.vstack([np.zeros((1, fused.shape[1]), dtype=np.float32), fused.astype(np.float32)])

    def build(self):
        datasets = super().build()
        source = datasets[0].inter_feat if self.profile_source == "train" else self.inter_feat
        fitted = self.compute_profiles(source)
        profiles = {name: f.profiles for name, f in fitted.items()}
        self._inject(FeatureSource.USER, profiles, datasets)
        self._inject(FeatureSource.ITEM, {ITEM_FIELD: self.item_matrix}, datasets)
        if self.train_profile == "leave_one_out":
            datasets[0].row_profiles = self._leave_one_out_rows(datasets[0].inter_feat, fitted)
        dims = {name: int(matrix.shape[1]) for name, matrix in profiles.items()}
        self.logger.info(
            f"MMa4CTR features: fusion {self.fusion} -> {ITEM_FIELD} {self.item_matrix.shape[1]} dims; "
            f"profiles from the {self.profile_source} interactions {dims}; "
            f"training rows see {self.train_profile} profiles"
        )
        return datasets

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

    def _leave_one_out_rows(self, interactions, fitted: dict[str, FittedProfiles]) -> dict:
        """Each training row's profiles without the row (``batches.leave_one_out_rows``)."""
        terms = {profile_field(m): removal_terms(self.modality_matrices[m], self.profile_length,
                                                 fitted[profile_field(m)].low, fitted[profile_field(m)].span)
                 for m in self.fused_modalities}
        return leave_one_out_rows(interactions[self.uid_field].numpy(), interactions[self.iid_field].numpy(),
                                  interactions[self.label_field].numpy(), {f: v.profiles for f, v in fitted.items()},
                                  terms, next(iter(fitted.values())).counts, self.profile_length)

    def __getitem__(self, index, join=True):
        """Rows by one tensor index per column (RecBole's indexing goes through a Python list).

        On the training split (leave_one_out) the rows' own profiles replace the stored ones.
        Anything but a sequence of row numbers (an int, a slice, a mask) goes to RecBole.
        """
        rows = row_index(index)
        if rows is None:
            return super().__getitem__(index, join)
        df = gather(self.inter_feat, rows)
        if not join:
            return df
        own = self.row_profiles or {}
        df = self.join(df, skip=own)
        df.update(Interaction({field: profiles.index_select(0, rows) for field, profiles in own.items()}))
        return df

    def join(self, df, skip=()):
        """RecBole's join (user, then item features at the batch's ids), by tensor index; ``skip``
        names user or item columns not to fetch (the training rows' own profiles)."""
        if self.user_feat is not None and self.uid_field in df:
            df.update(gather(self.user_feat, df[self.uid_field], skip))
        if self.item_feat is not None and self.iid_field in df:
            df.update(gather(self.item_feat, df[self.iid_field], skip))
        return df

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
