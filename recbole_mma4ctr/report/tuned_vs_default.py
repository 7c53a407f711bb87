"""What tuning bought each model: a tuned comparison's final cells against the same models' default cells.

A tuned comparison (``experiment/tuned.py``) runs every model with its valid-best settings and
every seed. The question a reader asks next is how much of a model's place in the table comes
from tuning. The honest answer pairs cells that differ ONLY in the tuned settings: the same
model, seed, epoch marks, data and test rows (equal ``test_rows`` digests), one run with the
settings of ``properties/model/<Model>.yaml`` (an ordinary ``--compare`` in the same results
folder) and one with the tuned settings. For each such pair: both test AUCs, the difference
tuned - default and its 95 % paired user-bootstrap interval (the same statistic the comparison's
paired table uses). Cells without a partner are listed, never guessed.

Made from records and saved predictions only; written as ``tuned_vs_default.md`` / ``.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import write_text
from ..record import read_predictions, records_in
from ..settings import tooling
from ..stats import paired_bootstrap
from . import tables
from .comparison import aligned


def final_cells(folder: Path, tuned: bool) -> dict:
    """(model, seed) -> the newest ok comparison record of ``folder`` (tuned cells carry a
    ``tuned`` block, default cells none; the other kind is ignored)."""
    cells = {}
    for record in records_in(folder):
        if record.get("status") != "ok" or record.get("kind") != "compare" or bool(record.get("tuned")) != tuned:
            continue
        if record.get("action"):            # a challenge cell scores one action: not this table's question
            continue
        cells[(record["model"], int(record["config"]["seed"]))] = record
    return cells


def pair_entry(model: str, seed: int, tuned: dict, default: dict | None, resamples: int) -> dict:
    """One (model, seed): both test AUCs and the paired difference, or why there is none."""
    entry = {"model": model, "seed": seed, "tuned_auc": (tuned.get("test") or {}).get("auc"),
             "tuned_settings": (tuned.get("tuned") or {}).get("settings")}
    if default is None:
        return {**entry, "error": "no default cell with this model and seed"}
    entry["default_auc"] = (default.get("test") or {}).get("auc")
    if (tuned.get("marks") or None) != (default.get("marks") or None):
        return {**entry, "error": f"different epoch marks (tuned {tuned.get('marks')}, default {default.get('marks')})"}
    if tuned.get("test_rows") != default.get("test_rows"):
        return {**entry, "error": "the two cells did not score the same test rows"}
    mine, theirs = read_predictions(tuned), read_predictions(default)
    orders = aligned(theirs, mine) if mine is not None and theirs is not None else None
    if orders is None:
        return {**entry, "error": "predictions missing or not aligned"}
    labels, users = theirs["label"][orders[0]], theirs["user"][orders[0]]
    boot = paired_bootstrap(mine["score"][orders[1]], theirs["score"][orders[0]], labels, users, resamples)
    low, high = boot["ci95"]
    return {**entry, "difference": boot["difference"], "ci95": boot["ci95"], "resamples": boot["resamples"],
            "verdict": "within noise" if low <= 0 <= high else ("tuned better" if low > 0 else "default better")}


def tuned_vs_default(tuned_folder: Path, default_folder: Path, resamples: int | None = None) -> list[dict]:
    """Every tuned final cell paired with its default cell (``pair_entry``), by model then seed."""
    resamples = int(tooling("report")["paired_resamples"] if resamples is None else resamples)
    tuned, default = final_cells(tuned_folder, True), final_cells(default_folder, False)
    models = list(dict.fromkeys(model for model, _ in tuned))
    return [pair_entry(model, seed, tuned[(model, seed)], default.get((model, seed)), resamples)
            for model, seed in sorted(tuned, key=lambda pair: (models.index(pair[0]), pair[1]))]


def by_model(entries: list[dict]) -> list[dict]:
    """Per model over its paired seeds: mean default and tuned AUC, mean difference, verdicts."""
    models: dict = {}
    for entry in entries:
        models.setdefault(entry["model"], []).append(entry)
    rows = []
    for model, pairs in models.items():
        paired = [e for e in pairs if "difference" in e]
        verdicts = [e["verdict"] for e in paired]
        rows.append({"model": model, "seeds_paired": f"{len(paired)}/{len(pairs)}",
                     "default_auc": float(np.mean([e["default_auc"] for e in paired])) if paired else None,
                     "tuned_auc": float(np.mean([e["tuned_auc"] for e in paired])) if paired else None,
                     "difference": float(np.mean([e["difference"] for e in paired])) if paired else None,
                     "verdicts": ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts)) or "-"})
    return rows


def write_tuned_vs_default(tuned_folder: Path, default_folder: Path) -> str | None:
    """Write the table into the tuned folder; None (nothing written) when the default folder
    holds no comparison cells."""
    tuned_folder, default_folder = Path(tuned_folder), Path(default_folder)
    if not default_folder.is_dir() or not final_cells(default_folder, False):
        return None
    entries = tuned_vs_default(tuned_folder, default_folder)
    summary = by_model(entries)
    table = tables.markdown(
        ["model", "seeds paired", "default AUC (mean)", "tuned AUC (mean)", "tuned - default (mean)",
         "per seed: 95% paired CI (users)"],
        tables.cells_of(summary, ["model", "seeds_paired", "default_auc", "tuned_auc", "difference", "verdicts"],
                        decimals={"default_auc", "tuned_auc", "difference"}))
    unpaired = [f"- {e['model']} seed {e['seed']}: {e['error']}" for e in entries if "error" in e]
    text = (f"# Tuned against default settings\n\nEach tuned final cell against the cell of the same model and seed "
            f"with the default settings (`{default_folder.name}/`), on the same test rows and epoch marks; the "
            f"difference is tuned - default test AUC, its interval a paired bootstrap over users.\n\n" + table + "\n"
            + ("\nNot paired:\n\n" + "\n".join(unpaired) + "\n" if unpaired else ""))
    write_text(tuned_folder / "tuned_vs_default.md", text)
    write_text(tuned_folder / "tuned_vs_default.json",
               json.dumps({"default_folder": str(default_folder), "models": summary, "pairs": entries}, indent=2))
    return table
