"""Figures for reports, drawn headless (matplotlib Agg) from arrays; each returns its PNG path.

ROC curves of test predictions, 2-D maps of MMa4CTR's hidden layer and raw input (UMAP when
umap-learn is installed, else PCA, said in the title), and dataset statistics (label rates,
interactions per user and per item on log-log axes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_points(scores, labels):
    """False and true positive rates at every distinct score threshold (descending)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0.5
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_group = np.r_[scores[1:] != scores[:-1], True]
    true_positives = np.cumsum(labels)[last_of_group]
    false_positives = np.cumsum(~labels)[last_of_group]
    positives, negatives = max(labels.sum(), 1), max((~labels).sum(), 1)
    return np.r_[0.0, false_positives / negatives], np.r_[0.0, true_positives / positives]


def roc_figure(curves: dict, path: Path, title: str) -> Path:
    """``curves``: label -> (scores, labels, auc)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 6))
    for name, (scores, labels, auc) in curves.items():
        fpr, tpr = roc_points(scores, labels)
        axis.plot(fpr, tpr, linewidth=1.4, label=f"{name} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    axis.legend(fontsize=8, loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def embed_2d(matrix: np.ndarray, seed: int = 0):
    """2-D coordinates and the method used: UMAP if importable, else PCA."""
    matrix = np.asarray(matrix, dtype=np.float64)
    try:
        import umap  # noqa: F401  (optional dependency)

        reducer = umap.UMAP(n_components=2, random_state=seed)
        return reducer.fit_transform(matrix), "UMAP"
    except ImportError:
        from sklearn.decomposition import PCA

        if matrix.shape[1] < 2:
            return np.hstack([matrix, np.zeros((len(matrix), 2 - matrix.shape[1]))]), "identity"
        return PCA(n_components=2, random_state=seed).fit_transform(matrix), "PCA (umap-learn not installed)"


def map_figure(matrix, labels, path: Path, title: str, seed: int = 0) -> tuple[Path, str]:
    """A 2-D map of rows coloured by label; positives drawn last so they stay visible."""
    plt = _pyplot()
    coords, method = embed_2d(matrix, seed)
    labels = np.asarray(labels) > 0.5
    figure, axis = plt.subplots(figsize=(6.5, 6))
    axis.scatter(coords[~labels, 0], coords[~labels, 1], s=3, alpha=0.35, color="tab:blue", label=f"label 0 ({(~labels).sum():,})")
    axis.scatter(coords[labels, 0], coords[labels, 1], s=9, alpha=0.9, color="tab:red", label=f"label 1 ({labels.sum():,})")
    axis.set(title=f"{title}\n{method}, {len(labels):,} test rows (seed {seed})", xlabel="component 1", ylabel="component 2")
    axis.legend(fontsize=8, markerscale=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path, method


def rates_figure(rates: dict, path: Path, title: str) -> Path:
    plt = _pyplot()
    names = list(rates)
    values = [rates[n] for n in names]
    figure, axis = plt.subplots(figsize=(7, 4))
    bars = axis.bar(names, values, color="tab:blue")
    for bar, value in zip(bars, values):
        ratio = (1 - value) / value if value > 0 else float("inf")
        axis.annotate(f"1:{ratio:,.0f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    axis.set(ylabel="positive rate (log scale)", title=f"{title}\n(annotated: negatives per positive)", yscale="log")
    axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def counts_figure(per_user: np.ndarray, per_item: np.ndarray, path: Path, title: str) -> Path:
    """Log-log histograms of interactions per user and per item."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, counts, what in ((axes[0], per_user, "user"), (axes[1], per_item, "item")):
        counts = np.asarray(counts)
        counts = counts[counts > 0]
        if len(counts):
            bins = np.unique(np.logspace(0, np.log10(counts.max() + 1), 30).astype(int))
            axis.hist(counts, bins=bins, color="tab:blue")
        axis.set(xscale="log", yscale="log", xlabel=f"interactions per {what}", ylabel=f"number of {what}s",
                 title=f"{what}s: {len(counts):,}, median {np.median(counts) if len(counts) else 0:.0f}")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
