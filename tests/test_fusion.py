"""Fusion variants produce the promised widths and respect the paper's rules."""

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import MinMaxScaler

from recbole_mma4ctr.fusion import FUSIONS, fuse, fusion_modalities, minmax_scale, pca_reduce

pytestmark = pytest.mark.unit  # pure: no RecBole training, no Ray (python -m pytest -m unit)


@pytest.fixture(scope="module")
def modalities():
    rng = np.random.default_rng(1)
    n = 400
    return {"visual": minmax_scale(rng.random((n, 192))), "acoustic": minmax_scale(rng.random((n, 242))),
            "textual": minmax_scale(rng.random((n, 73)))}


EXPECTED_WIDTH = {
    "visual": 192, "acoustic": 242, "textual": 73,
    "va_concat": 128, "vt_concat": 128, "at_concat": 128, "vat_concat": 128,
    "va_cross": 128, "vt_cross": 73, "at_cross": 73, "vat_cross": 73,
}


def test_there_are_eleven_fusions():
    assert len(FUSIONS) == 11 and set(FUSIONS) == set(EXPECTED_WIDTH)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_widths_match_the_paper(modalities, fusion):
    fused = fuse(modalities, fusion)
    assert fused.shape == (400, EXPECTED_WIDTH[fusion])
    assert np.isfinite(fused).all()
    assert fused.min() >= -1e-6 and fused.max() <= 1 + 1e-6


def reduced(matrix, width):
    """scikit-learn's exact PCA to ``width`` columns, then scikit-learn's per-column min-max."""
    return MinMaxScaler().fit_transform(PCA(n_components=width, svd_solver="full").fit_transform(matrix))


# What each fusion that runs a PCA must equal (the module docstring's recipe, written with scikit-learn):
# concat -> PCA to 128 and min-max when longer; cross -> every wider member PCA'd to the shortest width
# (at most 128) and min-max'd, then the elementwise product.
RECIPES = {
    "va_concat": lambda m: reduced(np.hstack([m["visual"], m["acoustic"]]), 128),
    "vt_concat": lambda m: reduced(np.hstack([m["visual"], m["textual"]]), 128),
    "at_concat": lambda m: reduced(np.hstack([m["acoustic"], m["textual"]]), 128),
    "vat_concat": lambda m: reduced(np.hstack([m["visual"], m["acoustic"], m["textual"]]), 128),
    "va_cross": lambda m: reduced(m["visual"], 128) * reduced(m["acoustic"], 128),
    "vt_cross": lambda m: reduced(m["visual"], 73) * m["textual"],
    "at_cross": lambda m: reduced(m["acoustic"], 73) * m["textual"],
    "vat_cross": lambda m: reduced(m["visual"], 73) * reduced(m["acoustic"], 73) * m["textual"],
}


@pytest.mark.parametrize("fusion", sorted(RECIPES))
def test_reducing_fusions_equal_scikit_learns_pca_and_scaling(modalities, fusion):
    expected = RECIPES[fusion]({name: matrix.astype(np.float64) for name, matrix in modalities.items()})
    np.testing.assert_allclose(fuse(modalities, fusion), expected, rtol=0, atol=1e-5)


def test_modality_max_dim_reduces_each_wide_modality_before_fusing(modalities):
    m = {name: matrix.astype(np.float64) for name, matrix in modalities.items()}
    # visual (192) and acoustic (242) to 100 each, textual (73) kept: 273 columns, then the concat's PCA to 128
    expected = reduced(np.hstack([reduced(m["visual"], 100), reduced(m["acoustic"], 100), m["textual"]]), 128)
    np.testing.assert_allclose(fuse(modalities, "vat_concat", modality_max_dim=100), expected, rtol=0, atol=1e-5)
    # a single modality: only the modality's own reduction
    np.testing.assert_allclose(fuse(modalities, "acoustic", modality_max_dim=50), reduced(m["acoustic"], 50),
                               rtol=0, atol=1e-5)


def test_short_concat_is_not_reduced():
    rng = np.random.default_rng(2)
    parts = {"visual": rng.random((50, 30)), "textual": rng.random((50, 20))}
    np.testing.assert_allclose(fuse(parts, "vt_concat"), np.hstack([parts["visual"], parts["textual"]]), rtol=1e-6)


def test_cross_is_elementwise_product_when_widths_agree():
    a = np.full((3, 4), 0.5)
    t = np.arange(12, dtype=float).reshape(3, 4) / 12
    np.testing.assert_allclose(fuse({"acoustic": a, "textual": t}, "at_cross"), 0.5 * t, rtol=1e-6)


def test_pca_variance_share_keeps_few_dims_for_low_rank_data():
    rng = np.random.default_rng(3)
    low_rank = rng.random((300, 3)) @ rng.random((3, 50))
    assert pca_reduce(low_rank, 0.9).shape[1] <= 3


def test_unknown_fusion_and_missing_modality_are_clear_errors():
    with pytest.raises(ValueError, match="unknown fusion"):
        fusion_modalities("vta_mix")
    with pytest.raises(ValueError, match="lacks"):
        fuse({"visual": np.ones((2, 2))}, "vt_concat")


def test_minmax_constant_column_is_zero():
    scaled = minmax_scale(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(scaled, [[0, 0], [1, 0]])


@pytest.mark.parametrize("shape", [(300, 40), (30, 80)])
def test_exact_pca_matches_scikit_learns_full_svd(shape):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(4)
    matrix = rng.random(shape) @ (rng.random((shape[1], shape[1])) ** 4)  # a decaying spectrum
    for target in (0.5, 0.9, 7):
        ours = pca_reduce(matrix, target)
        reference = PCA(n_components=target, svd_solver="full").fit_transform(matrix)
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, atol=1e-5 * np.abs(reference).max())
    copy = matrix.copy()
    np.testing.assert_array_equal(pca_reduce(copy, 0.9, overwrite=True), pca_reduce(matrix, 0.9))


def test_pca_of_wide_matrices_stays_finite_beyond_the_rank():
    """Fewer items than columns: centred data has rank n_rows - 1, and asking for n_rows
    components must give a zero last column, not a division by zero."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    wide = rng.random((20, 100))
    ours = pca_reduce(wide, 20)
    assert np.isfinite(ours).all() and ours.shape == (20, 20)
    reference = PCA(n_components=19, svd_solver="full").fit_transform(wide)
    np.testing.assert_allclose(ours[:, :19], reference, atol=1e-5 * np.abs(reference).max())
    assert np.abs(ours[:, 19]).max() < 1e-6
    parts = {name: minmax_scale(rng.random((20, 100))) for name in ("visual", "acoustic", "textual")}
    assert np.isfinite(fuse(parts, "vat_concat")).all()
