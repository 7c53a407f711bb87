"""The missing-modality study's table and plot, made from the records' ``robustness`` blocks only
(``robustness.py`` fills them; ``studies.run_study`` calls :func:`write_robustness`).

Files in the study folder: ``study.md`` (one row per model, modality and fill: test AUC with 0 %,
25 %, 50 % and 100 % of the test items' vectors of that modality replaced, and the AUC lost at
the largest share; the shuffled control is a row of its own), ``study.csv`` and ``study.json``
(one row per evaluation, every metric), ``study.png`` (AUC against the share, one panel per
modality, one line per model and fill, the control as a cross at its share).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..files import atomic_path, write_text
from . import tables


def robustness_rows(records) -> list[dict]:
    """One plain row per (model, modality, fill, share) from the ``ok`` records that carry one."""
    rows = []
    for record in records:
        if not record or record.get("status") != "ok" or not record.get("robustness"):
            continue
        block = record["robustness"]
        for entry in block["rows"]:
            rows.append({"model": record["model"], "test_items": block["test_items"], "fusion": block["fusion"],
                         "record": record.get("record_path") or record.get("run_id"), **entry})
    return rows


def summary_rows(rows: list[dict], shares: list[float]) -> list[dict]:
    """study.md's rows: per (model, modality, fill), the AUC at each share and the AUC lost at
    the largest share against share 0 (the plain test)."""
    table: dict = {}
    plain_auc = {(r["model"], r["modality"]): r.get("auc") for r in rows if r["share"] == 0.0}
    for row in rows:
        fill = f"{row['fill']} (control)" if row.get("control") else row["fill"]
        entry = table.setdefault((row["model"], row["modality"], fill),
                                 {"model": row["model"], "modality": row["modality"], "fill": fill})
        entry[f"auc@{row['share']:g}"] = row.get("auc")
        entry["items"] = max(entry.get("items", 0), row["items_replaced"])
    for entry in table.values():
        base = plain_auc.get((entry["model"], entry["modality"]))
        largest = entry.get(f"auc@{shares[-1]:g}") if shares else None
        entry["lost"] = None if base is None or largest is None else base - largest
    return list(table.values())


def write_robustness(folder: Path, study: dict, records, dataset: str) -> str:
    """Write study.md / .csv / .json / .png of the missing-modality study; returns the markdown table."""
    spec = study["evaluate"]
    shares = sorted(float(s) for s in spec["shares"])
    rows = robustness_rows(records)
    summary = summary_rows(rows, shares)
    columns = ["model", "modality", "fill"] + [f"auc@{s:g}" for s in shares] + ["lost", "items"]
    headers = ["model", "modality", "replaced by"] + [f"AUC {s:.0%} replaced" for s in shares] \
        + [f"AUC lost at {shares[-1]:.0%}", "items replaced (most)"]
    table = tables.markdown(headers, tables.cells_of(summary, columns, decimals=set(columns[3:-1])))
    failed = [f"{r.get('cell')}: {r.get('status')} {r.get('error') or ''}".strip() for r in records
              if r is not None and r.get("status") != "ok"]
    missing = [r.get("cell") for r in records if r is None]
    test_items = sorted({r["test_items"] for r in rows})
    notes = [f"# {study['title']} on {dataset}",
             f"Each model trained once; its best-validation weights score the test split again with one modality's "
             f"vectors of a share of the {', '.join(map(str, test_items)) or '?'} test items replaced (same items for "
             f"every model and fill, nested shares, seed {spec['seed']}). Zeros: the vectors set to 0; mean: the "
             f"modality's mean over the training items; shuffle (control): every test item given another test "
             f"item's vector. User profiles stay the training split's. Share 0 is the plain test.",
             table]
    if failed or missing:
        notes.append("Not in the table: " + "; ".join(failed + [f"{m}: not run" for m in missing]))
    write_text(folder / "study.md", "\n\n".join(notes) + "\n")
    buffer = io.StringIO()
    fields = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(folder / "study.csv", buffer.getvalue())
    write_text(folder / "study.json", json.dumps({"study": study["name"], "title": study["title"], "dataset": dataset,
                                                  "evaluate": spec, "rows": rows}, indent=2, default=str))
    plot_robustness(folder / "study.png", study, rows, dataset)
    return table


def plot_robustness(path: Path, study: dict, rows: list[dict], dataset: str) -> None:
    """AUC against the share replaced: a panel per modality, a line per (model, fill)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    modalities = list(dict.fromkeys(r["modality"] for r in rows)) or list(study["evaluate"]["modalities"])
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = {model: f"C{index}" for index, model in enumerate(models)}
    styles = {"zeros": "-", "mean": "--"}
    figure, axes = plt.subplots(1, len(modalities), figsize=(5 * len(modalities), 4.5), sharey=True, squeeze=False)
    for axis, modality in zip(axes[0], modalities):
        for model in models:
            mine = [r for r in rows if r["model"] == model and r["modality"] == modality and r.get("auc") is not None]
            for fill in dict.fromkeys(r["fill"] for r in mine if not r.get("control")):
                points = sorted((r["share"], r["auc"]) for r in mine if r["fill"] == fill and not r.get("control"))
                axis.plot(*zip(*points), marker="o", linestyle=styles.get(fill, ":"), color=colours[model],
                          label=f"{model}, {fill}")
            for r in mine:
                if r.get("control"):
                    axis.plot([r["share"]], [r["auc"]], marker="x", markersize=10, linestyle="", color=colours[model],
                              label=f"{model}, {r['fill']} (control)")
        axis.set(title=f"{modality} replaced", xlabel="share of test items replaced")
        axis.set_xticks(sorted(float(s) for s in study["evaluate"]["shares"]))
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test AUC")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, fontsize=7)
    figure.suptitle(f"{study['title']} ({dataset})")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
