"""Save every test pair's prediction once, compactly, so reports never need retraining or logs.

``<stem>.predictions.npz`` holds, per test pair: user, item, timestamp (the row id in our
converted datasets), label and score (a probability; sigmoid(score) for ranking models). For a
model that exposes ``hidden(interaction)`` and ``concat_input(interaction)`` (MMa4CTR), a
bounded, seeded sample of rows also keeps the last hidden layer and the raw input, for maps of
what the network learned (``sample_index`` says which rows).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def save_test_predictions(trainer, test_data, config, path: Path, sample_rows: int = 20_000, seed: int = 0) -> str:
    model = trainer.model
    model.eval()
    squash = bool(getattr(trainer, "scores_squashed", False))
    fields = {"user": config["USER_ID_FIELD"], "item": config["ITEM_ID_FIELD"], "timestamp": config["TIME_FIELD"],
              "label": config["LABEL_FIELD"]}
    columns = {key: [] for key in (*fields, "score")}
    has_hidden = hasattr(model, "hidden") and hasattr(model, "concat_input")
    sampled = {"sample_index": [], "hidden": [], "raw_input": []}
    total_rows = len(test_data._dataset) if hasattr(test_data, "_dataset") else sample_rows
    keep_share = min(1.0, sample_rows / max(total_rows, 1))
    rng = np.random.default_rng(seed)
    offset = 0
    for batch in test_data:
        interaction = (batch[0] if isinstance(batch, tuple) else batch).to(config["device"])
        scores = model.predict(interaction).float()
        columns["score"].append((torch.sigmoid(scores.double()) if squash else scores.double()).cpu().numpy())
        for key, field in fields.items():
            columns[key].append(interaction[field].cpu().numpy() if field in interaction else np.zeros(len(scores)))
        if has_hidden:
            keep = np.flatnonzero(rng.random(len(scores)) < keep_share)
            if len(keep):
                rows = torch.as_tensor(keep, device=scores.device)
                sampled["sample_index"].append(keep + offset)
                sampled["hidden"].append(model.hidden(interaction)[rows].cpu().numpy())
                sampled["raw_input"].append(model.concat_input(interaction)[rows].cpu().numpy())
        offset += len(scores)
    arrays = {key: np.concatenate(parts) if parts else np.zeros(0) for key, parts in columns.items()}
    if has_hidden and sampled["sample_index"]:
        arrays.update({key: np.concatenate(parts) for key, parts in sampled.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    os.replace(temporary, path)
    return str(path)
