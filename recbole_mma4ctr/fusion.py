"""Reduce, scale and fuse item modalities: the paper's item-side recipe, as pure functions.

MMa4CTR describes every item by three modality vectors (visual, acoustic, textual). The paper
reduces each with PCA, min-max scales each column to [0, 1], and fuses them in one of eleven
ways (its ablation; docs/protocols.md, "The paper's model and recipe"):

- single: ``visual``, ``acoustic``, ``textual``;
- concat: ``va_concat``, ``vt_concat``, ``at_concat``, ``vat_concat``: concatenate, then PCA to
  ``max_dim`` (128) when longer;
- cross: ``va_cross``, ``vt_cross``, ``at_cross``, ``vat_cross``: PCA every member down to the
  shortest one (capped at ``max_dim``, which is what the paper's va_cross width of 128 on WeChat
  implies), then take the elementwise product.

``modality_max_dim`` (the key ``fusion_modality_max_dim``; the paper protocol sets 128, as the
authors' ``cross_matrix.py`` / ``gen_matrix.py`` do): before any fusion, a modality wider than it
is first PCA'd down to it (on WeChat: visual and acoustic, 192 and 242 columns on the real data,
to 128 each, textual's 73 kept). ``None`` (the default) fuses the converter's matrices as they are.

Choice documented here: whenever fusion runs a PCA, its output is min-max scaled again so the
model's item input stays in [0, 1] for every variant (the paper only states the scaling before
fusion). Nothing here looks at labels, so fitting on all items leaks nothing.
"""

from __future__ import annotations

import numpy as np

MODALITY_LETTERS = {"v": "visual", "a": "acoustic", "t": "textual"}
SINGLE_FUSIONS = ("visual", "acoustic", "textual")
MULTI_PREFIXES = ("va", "vt", "at", "vat")
FUSIONS = SINGLE_FUSIONS + tuple(
    f"{prefix}_{kind}" for kind in ("concat", "cross") for prefix in MULTI_PREFIXES
)


def fusion_modalities(fusion: str) -> list[str]:
    """The modalities a fusion name uses, in v, a, t order (``vt_cross`` -> visual, textual)."""
    if fusion in SINGLE_FUSIONS:
        return [fusion]
    prefix, _, kind = fusion.partition("_")
    if kind not in ("concat", "cross") or prefix not in MULTI_PREFIXES:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of: {', '.join(FUSIONS)}")
    return [MODALITY_LETTERS[letter] for letter in prefix]


def minmax_scale(matrix: np.ndarray) -> np.ndarray:
    """Scale each column to [0, 1]; a constant column becomes 0 (it carries no information).

    Computed in float64, returned as float32, a block of rows at a time: whole-matrix float64
    temporaries (150 MB for 100 k items x 180 columns) cost more in page faults than in
    arithmetic on a small VM.
    """
    matrix = np.asarray(matrix)
    if matrix.dtype.kind not in "f":
        matrix = matrix.astype(np.float64)
    out = np.empty(matrix.shape, dtype=np.float32)
    if matrix.shape[0] == 0:
        return out
    low = matrix.min(axis=0).astype(np.float64)
    span = matrix.max(axis=0).astype(np.float64) - low
    constant = span <= 0
    safe_span = np.where(constant, 1.0, span)
    step = max(1, (1 << 19) // max(matrix.shape[1], 1))  # ~4 MB of float64 per block
    for start in range(0, matrix.shape[0], step):
        block = (matrix[start:start + step].astype(np.float64) - low) / safe_span
        block[:, constant] = 0.0
        out[start:start + step] = block
    return out


def pca_reduce(matrix: np.ndarray, n_components: float | int, overwrite: bool = False) -> np.ndarray:
    """PCA to a fixed width (int) or to the fewest components keeping a variance share (float < 1).

    A fixed width larger than the data allows (rows or columns) is clipped to what exists; a
    matrix already narrower than a fixed width is returned unchanged. Exact and deterministic:
    tall matrices (100 k feeds x <= 600 columns) use scikit-learn's ``covariance_eigh`` solver
    (one d x d product and a small eigendecomposition, several times faster than the full SVD it
    equals), wide ones the full SVD: no random numbers, hence no seed (a cell's fused vectors
    are the same for every seed, so cells of different seeds share a prepared dataset).
    ``overwrite`` lets scikit-learn work on a caller's float64 matrix without copying it.
    """
    from sklearn.decomposition import PCA

    matrix = np.asarray(matrix, dtype=np.float64)
    n_rows, n_cols = matrix.shape
    if isinstance(n_components, float) and not 0.0 < n_components <= 1.0:
        raise ValueError(f"variance share must be in (0, 1], got {n_components}")
    if isinstance(n_components, float) and n_components == 1.0:
        return matrix.astype(np.float32)
    if isinstance(n_components, (int, np.integer)):
        if n_components >= n_cols:
            return matrix.astype(np.float32)
        n_components = int(min(n_components, n_rows))
    elif n_rows < 2:
        return matrix.astype(np.float32)
    solver = "covariance_eigh" if n_cols <= n_rows else "full"
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant matrix: 0/0 variance shares, one zero column
        return PCA(n_components=n_components, svd_solver=solver, copy=not overwrite).fit_transform(matrix).astype(np.float32)


def fuse(modalities: dict[str, np.ndarray], fusion: str, max_dim: int = 128,
         modality_max_dim: int | None = None) -> np.ndarray:
    """Fuse per-modality item matrices (rows aligned, each already scaled) into one item matrix;
    with ``modality_max_dim``, each wider modality is PCA'd to it first (module docstring)."""
    names = fusion_modalities(fusion)
    missing = [name for name in names if name not in modalities]
    if missing:
        raise ValueError(f"fusion {fusion!r} needs modalities {missing}, which the dataset lacks")
    if modality_max_dim is not None and (isinstance(modality_max_dim, bool) or int(modality_max_dim) < 1):
        raise ValueError(f"fusion_modality_max_dim must be a positive integer or ~, got {modality_max_dim!r}")
    parts = [np.asarray(modalities[name], dtype=np.float32) for name in names]
    if modality_max_dim is not None:
        parts = [minmax_scale(pca_reduce(part, int(modality_max_dim))) if part.shape[1] > modality_max_dim
                 else part for part in parts]
    if len(parts) == 1:
        return parts[0]
    if fusion.endswith("_concat"):
        joined = np.hstack(parts)
        if joined.shape[1] > max_dim:
            return minmax_scale(pca_reduce(joined, int(max_dim)))
        return joined
    width = min(min(part.shape[1] for part in parts), max_dim)
    if any(part.shape[1] > width for part in parts) and parts[0].shape[0] < width:
        width = max(parts[0].shape[0], 1)  # PCA cannot give more components than items
    product = np.ones((parts[0].shape[0], width), dtype=np.float32)
    for part in parts:
        if part.shape[1] > width:
            part = minmax_scale(pca_reduce(part, int(width)))
        product *= part
    return product
