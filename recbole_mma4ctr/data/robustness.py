"""Missing-modality robustness: a trained model scored on the test split with one modality's
vectors of a share of the test items replaced, never retrained (``--study=missing_modality``).

A cell that carries ``robustness`` (the study file's ``evaluate`` block: ``modalities``,
``fills``, ``shares``, ``control``, ``seed``) is trained and tested as usual (``run.run_cell``);
then, with the best-validation weights still loaded, :func:`evaluate_missing_modality` scores
the same test rows once per (modality, fill, share) and once per modality for the shuffled
control, and the record keeps every result under ``robustness``.

The rule (:func:`replace_modality`, pure and seeded):

- which items: the distinct items of the test split, in a seeded random order; a share ``s``
  takes the first ``round(s * n)`` of them, so the 25 % are inside the 50 %, inside the 100 %;
- which values: ``zeros``; ``mean``, the mean vector of that modality over the items of the
  training split's rows; ``shuffle`` (the control), each chosen item gets the vector of the next
  chosen item in that order (a cycle: no item keeps its own when two or more are chosen).

Only that modality's matrix changes; the user profiles stay those of the training split (what a
deployed model would hold), and the fused item vector (``item_mm``, what MMa4CTR and the ``+mm``
baselines read) is made again from the changed matrix with the run's own fusion: by fusing
again when the fusion works row by row (every single, concat or cross fusion without a PCA),
else through the exact affine map from the modality columns to the fused ones (a concat with
its PCA and scaling is affine; fitted on all items and checked to reproduce them). A fusion that
is neither (a cross fusion with a PCA) is refused, naming the setting. Items not chosen keep
their vectors bit for bit.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ..model.feature_fair import split_name
from ..record import plain
from .item_modalities import ITEM_FIELD

FILLS = ("zeros", "mean", "shuffle")
AFFINE_TOLERANCE = 1e-4


def check_reads_modalities(model: str, study: str) -> None:
    """Refuse, before anything trains, a model that reads no modality vectors (one line)."""
    if model != "MMa4CTR" and not split_name(model)[1]:
        raise UsageError(f"--models={model}: the {study} study replaces modality vectors, which {model} does not "
                         f"read; use MMa4CTR or a +mm model (DeepFM+mm, DCNV2+mm, DIN+mm, ...)")


def replace_modality(matrix: np.ndarray, test_items, share: float, fill: str, seed: int,
                     mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``matrix`` (rows = internal item ids) with the vectors of a ``share`` of ``test_items``
    replaced by ``fill`` (module docstring); returns (new matrix, the chosen item ids in order)."""
    if fill not in FILLS:
        raise UsageError(f"missing_modality fills must be among {', '.join(FILLS)}; got {fill!r}")
    if not 0.0 <= float(share) <= 1.0:
        raise UsageError(f"missing_modality shares must be between 0 and 1; got {share!r}")
    items = np.unique(np.asarray(test_items, dtype=np.int64))
    order = items[np.random.default_rng(int(seed)).permutation(len(items))]
    chosen = order[:int(round(float(share) * len(items)))]
    replaced = np.array(matrix, dtype=np.float32, copy=True)
    if fill == "zeros":
        replaced[chosen] = 0.0
    elif fill == "mean":
        if mean is None:
            raise UsageError("missing_modality fill 'mean' needs the training mean of the modality")
        replaced[chosen] = np.asarray(mean, dtype=np.float32)
    elif len(chosen) > 1:
        replaced[chosen] = np.asarray(matrix, dtype=np.float32)[np.roll(chosen, -1)]
    return replaced, chosen


def training_mean(matrix: np.ndarray, train_items) -> np.ndarray:
    """The mean vector of a modality over the distinct items of the training rows."""
    return np.asarray(matrix, dtype=np.float64)[np.unique(np.asarray(train_items, dtype=np.int64))].mean(axis=0)


def refuser(dataset):
    """A function (modality matrices -> fused item matrix) that reproduces the dataset's own
    ``item_mm`` for unchanged matrices and changes only the rows whose modality rows changed."""
    original = dataset.item_matrix
    names = list(dataset.fused_modalities)
    # half the items' vectors zeroed in every modality: a row-wise fusion leaves the other half as it was
    # (a fusion that fits a PCA or a scaling over the items does not; a mere reordering would not show it)
    half = 1 + (len(original) - 1) // 2
    probe = {name: np.vstack([np.zeros_like(matrix[:half]), matrix[half:]])
             for name, matrix in dataset.modality_matrices.items()}
    probed = dataset.fuse_items(probe)
    if probed.shape == original.shape and np.array_equal(probed[half:], original[half:]):
        return lambda matrices: dataset.fuse_items(matrices)
    inputs = np.hstack([dataset.modality_matrices[name] for name in names]).astype(np.float64)
    design = np.hstack([inputs[1:], np.ones((inputs.shape[0] - 1, 1))])
    coefficients = np.linalg.lstsq(design, original[1:].astype(np.float64), rcond=None)[0]
    error = float(np.abs(design @ coefficients - original[1:]).max()) if len(design) else 0.0
    if error > AFFINE_TOLERANCE:
        raise UsageError(f"fusion {dataset.fusion!r}: the missing_modality study cannot re-fuse one item's vector "
                         f"without refitting its PCA over all items (not row-wise, not affine: error {error:.2g}); "
                         f"use a concat or single fusion, or a cross fusion whose modalities need no PCA")

    def affine(matrices):
        joined = np.hstack([matrices[name] for name in names]).astype(np.float64)
        fused = np.array(original, copy=True)
        changed = np.flatnonzero(np.any(joined != inputs, axis=1))
        changed = changed[changed > 0]
        fused[changed] = np.hstack([joined[changed], np.ones((len(changed), 1))]) @ coefficients
        return fused

    return affine


def set_item_vectors(dataset, model, fused: np.ndarray) -> None:
    """Put ``fused`` in as the items' ``item_mm`` where the model reads it: the dataset's item
    features (MMa4CTR, context-aware +mm: joined per batch) and a sequence embedding layer's own
    copy (DIN+mm, DIEN+mm); a (value, index) pair feature keeps its indices."""
    import torch

    values = torch.from_numpy(np.ascontiguousarray(fused, dtype=np.float32))
    holders = [dataset.item_feat]
    layer = getattr(model, "embedding_layer", None)
    if getattr(layer, "item_feat", None) is not None and ITEM_FIELD in layer.item_feat.interaction:
        holders.append(layer.item_feat)
    for holder in holders:
        stored = holder.interaction[ITEM_FIELD]
        new = values.to(stored.device)
        if stored.dim() == 3:
            new = torch.stack([new, stored[..., 1]], dim=-1)
        holder.interaction[ITEM_FIELD] = new


def evaluate_missing_modality(trainer, test_data, train_dataset, spec: dict, baseline: dict) -> dict:
    """Score the test split once per (modality, fill, share) and per modality's shuffled control
    with the model as it is (best-validation weights); ``baseline`` is the plain test result
    (share 0). Returns the record's ``robustness`` block; the item vectors are put back after."""
    dataset = test_data._dataset
    if not hasattr(dataset, "modality_matrices"):
        raise UsageError(f"{trainer.config['model']}: the missing_modality study needs a model that reads the "
                         f"modality vectors (MMa4CTR or a +mm model)")
    iid = dataset.iid_field
    test_items = np.unique(dataset.inter_feat[iid].numpy())
    train_items = np.unique(train_dataset.inter_feat[iid].numpy())
    seed = int(spec["seed"])
    fuse_again = refuser(dataset)
    original = dataset.item_matrix
    rows = []
    modalities = [m for m in spec["modalities"] if m in dataset.fused_modalities]
    plan = [(m, fill, float(s)) for m in modalities for fill in spec["fills"] for s in spec["shares"]]
    plan += [(m, spec["control"], 1.0) for m in modalities if spec.get("control")]
    try:
        for modality, fill, share in plan:
            if share == 0.0:
                result = baseline
                chosen = []
            else:
                matrix = dataset.modality_matrices[modality]
                mean = training_mean(matrix, train_items) if fill == "mean" else None
                replaced, chosen = replace_modality(matrix, test_items, share, fill, seed, mean)
                set_item_vectors(dataset, trainer.model, fuse_again({**dataset.modality_matrices, modality: replaced}))
                result = plain(trainer.evaluate(test_data, load_best_model=False, show_progress=False))
            rows.append({"modality": modality, "fill": fill, "share": share, "items_replaced": int(len(chosen)),
                         "control": fill == spec.get("control"), **{k: v for k, v in result.items()}})
    finally:
        set_item_vectors(dataset, trainer.model, original)
    skipped = [m for m in spec["modalities"] if m not in modalities]
    return {"test_items": int(len(test_items)), "train_items": int(len(train_items)), "seed": seed,
            "fusion": dataset.fusion, "skipped_modalities": skipped, "rows": rows}
