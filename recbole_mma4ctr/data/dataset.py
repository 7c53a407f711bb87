"""MMa4CTRDataset: RecBole's Dataset plus the multimodal item and user features MMa4CTR reads.

Item side: the converter leaves one matrix per modality in ``<dataset>.mm.npz`` (raw item ids
plus ``visual`` / ``acoustic`` / ``textual``). On load they are aligned with RecBole's internal
item ids and fused (``fusion``, default the paper's ``vat_concat``) into the item field
``item_mm`` (``item_modalities.ModalityFeatures``, the one path the ``+mm`` baselines use too).
Fusion never looks at labels, so doing it on all items is safe.

User side: after RecBole has split the interactions, each user's profile per fused modality is
computed from the TRAINING split only (``profiles.user_profiles``) and injected as user fields
``profile_<modality>`` (float_seq of ``profile_length + 1`` values). Valid and test labels
therefore cannot reach the features. ``profile_source: all`` reproduces the authors' leaky
choice (profiles from every interaction) for protocol comparisons only.

Training rows: a training row's own label is inside its user's train-only profile, which valid
and test rows never enjoy. With ``train_profile: leave_one_out`` the TRAINING split's batches
carry, for each row, its user's profile without that row (``profiles.leave_one_out``, through
the same fitted scaler; a user whose only training row it is gets the cold-start columns). The
training split keeps what the correction needs (per-user counts and per-item removal terms, a
few MB: ``leave_one_out_terms``) and corrects each batch as it is gathered
(``batches.leave_one_out_batch``), so the model is unchanged and no per-row copy of the profiles
is held (about 1.5 GB at full WeChat scale). Valid, test and prediction batches keep the stored
profiles.
``inclusive`` keeps the stored profiles for training rows too, and is forced with
``profile_source: all`` (the paper's setup).
The device column is kept as is: it is not a label.
"""

from __future__ import annotations

from recbole.data.dataset import Dataset
from recbole.utils import FeatureSource

from ..errors import UsageError
from ..profiles import FittedProfiles, removal_terms
from ..settings import setting
from .batches import gather, leave_one_out_batch, row_index
from .item_modalities import ITEM_FIELD, ModalityFeatures, MODEL_YAML, profile_field
from .paper_split import PositionalSplit

TRAIN_PROFILES = ("leave_one_out", "inclusive")
__all__ = ["ITEM_FIELD", "MMa4CTRDataset", "profile_field"]


class MMa4CTRDataset(ModalityFeatures, PositionalSplit, Dataset):
    """A RecBole Dataset whose users carry train-only multimodal profiles and items a fused vector."""

    def __init__(self, config):
        super().__init__(config)
        self._init_modalities(config)      # item_modalities: load, align, fuse (shared with the +mm baselines)
        self.profile_source = self._checked_profile_source(config)
        self.train_profile = self._resolve_train_profile(config)
        # training split only (leave_one_out), set by build(): {"counts": per-user training rows,
        # "fields": profile field -> removal_terms (positive, negative, cold)}
        self.leave_one_out_terms = None
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

    def build(self):
        datasets = super().build()
        source = datasets[0].inter_feat if self.profile_source == "train" else self.inter_feat
        fitted = self.compute_profiles(source)
        profiles = {name: f.profiles for name, f in fitted.items()}
        self._inject(FeatureSource.USER, profiles, datasets)
        self._inject(FeatureSource.ITEM, {ITEM_FIELD: self.item_matrix}, datasets)
        if self.train_profile == "leave_one_out":
            datasets[0].leave_one_out_terms = self._leave_one_out_terms(fitted)
        dims = {name: int(matrix.shape[1]) for name, matrix in profiles.items()}
        self.logger.info(
            f"MMa4CTR features: fusion {self.fusion} -> {ITEM_FIELD} {self.item_matrix.shape[1]} dims; "
            f"profiles from the {self.profile_source} interactions {dims}; "
            f"training rows see {self.train_profile} profiles"
        )
        return datasets

    def _leave_one_out_terms(self, fitted: dict[str, FittedProfiles]) -> dict:
        """What a training batch's leave-one-out correction needs (``batches.leave_one_out_batch``):
        each user's training-row count and, per profile field, its modality's removal terms."""
        fields = {profile_field(m): removal_terms(self.modality_matrices[m], self.profile_length,
                                                  fitted[profile_field(m)].low, fitted[profile_field(m)].span)
                  for m in self.fused_modalities}
        return {"counts": next(iter(fitted.values())).counts, "fields": fields}

    def __getitem__(self, index, join=True):
        """Rows by one tensor index per column (RecBole's indexing goes through a Python list).

        On the training split (leave_one_out) each row's profiles are corrected to leave the row out.
        Anything but a sequence of row numbers (an int, a slice, a mask) goes to RecBole.
        """
        rows = row_index(index)
        if rows is None:
            return super().__getitem__(index, join)
        df = gather(self.inter_feat, rows)
        if not join:
            return df
        df = self.join(df)
        terms = self.leave_one_out_terms
        if terms is not None:
            leave_one_out_batch(df, terms["fields"], terms["counts"], self.profile_length, self.uid_field,
                                self.iid_field, self.label_field)
        return df

    def join(self, df):
        """RecBole's join (user, then item features at the batch's ids), by tensor index."""
        if self.user_feat is not None and self.uid_field in df:
            df.update(gather(self.user_feat, df[self.uid_field]))
        if self.item_feat is not None and self.iid_field in df:
            df.update(gather(self.item_feat, df[self.iid_field]))
        return df
