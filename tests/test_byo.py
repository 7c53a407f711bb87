"""Bring your own dataset (docs/byo_dataset.md): atomic files + <name>.mm.npz written from scratch."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_settings

WIDTHS = {"visual": 32, "acoustic": 24, "textual": 28}


def write_byo(folder: Path, name: str = "byo", seed: int = 0, with_npz: bool = True) -> Path:
    """200 items in 5 clusters, 160 users each liking one cluster; the label follows that taste."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_clusters, per_user = 160, 200, 5, 110
    cluster = rng.integers(0, n_clusters, size=n_items)
    favourite = rng.integers(0, n_clusters, size=n_users)
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.integers(0, n_items, size=len(users))
    liked = cluster[items] == favourite[users]
    label = (rng.random(len(users)) < np.where(liked, 0.6, 0.05)).astype(float)
    order = rng.permutation(len(users))  # interleave users over time
    users, items, label = users[order], items[order], label[order]
    target = folder / name
    target.mkdir(parents=True)
    inter = pd.DataFrame({"user_id:token": [f"u{u}" for u in users], "item_id:token": [f"i{i}" for i in items],
                          "timestamp:float": np.arange(len(users), dtype=float), "label:float": label,
                          "device:float": rng.integers(1, 3, size=len(users)).astype(float)})
    inter.to_csv(target / f"{name}.inter", sep="\t", index=False)
    pd.DataFrame({"item_id:token": [f"i{i}" for i in range(n_items)]}).to_csv(target / f"{name}.item", sep="\t", index=False)
    if with_npz:
        matrices = {}
        for modality, width in WIDTHS.items():
            centres = rng.normal(size=(n_clusters, width))
            vectors = centres[cluster] + 0.5 * rng.normal(size=(n_items, width))
            span = vectors.max(axis=0) - vectors.min(axis=0)
            matrices[modality] = ((vectors - vectors.min(axis=0)) / span).astype(np.float32)
        np.savez(target / f"{name}.mm.npz", item_id=np.array([f"i{i}" for i in range(n_items)]), **matrices)
    return target


def byo_settings(tmp_path, **extra):
    return run_settings(tmp_path, **{"data_path": tmp_path / "data", "epochs": 8, "train_batch_size": 512, **extra})


def test_byo_dataset_runs_mma4ctr_and_a_baseline_end_to_end(tmp_path):
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    write_byo(tmp_path / "data")
    record = run_recbole_mma4ctr("MMa4CTR", "byo", None, byo_settings(tmp_path))
    assert record["model"] == "MMa4CTR" and record["dataset"] == "byo"
    assert Path(record["record_path"]).exists() and str(tmp_path / "results") in record["record_path"]
    assert record["features"]["input_dims"]["item_mm"] == sum(WIDTHS.values())
    assert set(record["test"]) == {"auc", "gauc", "uauc", "logloss"}
    assert record["test"]["auc"] > 0.6, record["test"]
    baseline = run_recbole_mma4ctr("BPR", "byo", None, byo_settings(tmp_path, epochs=2))
    assert baseline["model"] == "BPR" and baseline["dataset"] == "byo"
    assert set(baseline["test"]) == {"auc", "gauc", "uauc", "logloss"}
    assert Path(baseline["record_path"]).exists()


def test_a_missing_modality_file_is_named(tmp_path):
    from recbole_mma4ctr.run import run_recbole_mma4ctr

    folder = write_byo(tmp_path / "data", name="nofeatures", with_npz=False)
    with pytest.raises(FileNotFoundError, match="modality file not found") as raised:
        run_recbole_mma4ctr("MMa4CTR", "nofeatures", None, byo_settings(tmp_path))
    assert str(folder / "nofeatures.mm.npz") in str(raised.value)
