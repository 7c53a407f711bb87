"""``--report=<results folder>``: report.md and a self-contained report.html from records only.

Reads every result record (``*.json`` with a ``model``) and its ``*.predictions.npz`` in the
folder, plus ``comparison.md`` and study tables when present, and the converted dataset that
the records name (manifest and ``.inter``, its columns found by the record's field names) for
dataset statistics. The protocol, the split and the cold-item counts are stated as each record
recorded them (``protocol``, ``split``, ``test_by_coldness``); no split is recomputed here, so a
report can not describe a split other than the one a run used. Figures are PNG files next
to the report; the HTML references only those, by relative name. Anything a record lacks (no
predictions, no hidden layer for a baseline, no manifest) is said in the report, not an error.
"""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

from ..files import write_text
from ..record import read_predictions, records_in
from ..stats import weighted_auc
from . import figures, tables
from .comparison import json_tables, protocol_lines, split_words


def dataset_statistics(record: dict):
    """Counts of the dataset a record names (users, items and interactions of its ``.inter``, whose
    columns are found by the record's own field names, and its manifest); None when it is not on
    this machine. Splits are never recomputed here: a record states its own (``split``)."""
    config = record.get("config") or {}
    folder = Path(str(config.get("data_path", "")))
    inter_path = folder / f"{record['dataset']}.inter"
    if not inter_path.exists():
        return None
    import pandas as pd

    fields = {config.get("USER_ID_FIELD"): "user", config.get("ITEM_ID_FIELD"): "item"}
    separator = config.get("field_separator")
    if None in fields or not separator:
        return None
    header = inter_path.open(encoding="utf-8").readline().rstrip("\r\n").split(separator)
    columns = {typed: fields[typed.partition(":")[0]] for typed in header if typed.partition(":")[0] in fields}
    if len(columns) != len(fields):
        return None
    frame = pd.read_csv(inter_path, sep=separator, usecols=list(columns), dtype=str).rename(columns=columns)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    return {
        "users": int(frame["user"].nunique()), "items": int(frame["item"].nunique()), "interactions": len(frame),
        "per_user": frame.groupby("user").size().to_numpy(), "per_item": frame.groupby("item").size().to_numpy(),
        "manifest": manifest,
    }


class Page:
    """Blocks rendered twice: as markdown and as HTML."""

    def __init__(self):
        self.blocks = []

    def heading(self, text, level=2):
        self.blocks.append(("h", level, text))

    def text(self, text):
        self.blocks.append(("p", text))

    def table(self, header: list[str], cells: list[list[str]]):
        self.blocks.append(("table", header, cells))

    def image(self, path: Path, caption: str):
        self.blocks.append(("img", Path(path).name, caption))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            if block[0] == "h":
                out.append("#" * block[1] + " " + block[2])
            elif block[0] == "p":
                out.append(block[1])
            elif block[0] == "table":
                out.append(tables.markdown(block[1], block[2]))
            else:
                out.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
               "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
               "img{max-width:100%}figcaption{color:#555;font-size:13px}</style></head><body>"]
        for block in self.blocks:
            if block[0] == "h":
                out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif block[0] == "p":
                out.append(f"<p>{html.escape(block[1])}</p>")
            elif block[0] == "table":
                out.append(tables.html(block[1], block[2]))
            else:
                out.append(f"<figure><img src='{html.escape(block[1])}' alt='{html.escape(block[2])}'>"
                           f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _markdown_tables(text: str):
    """Split a markdown document into text paragraphs and pipe tables (as the lines of each table)."""
    blocks, table = [], []
    for line in text.splitlines():
        if line.strip().startswith("|"):
            table.append(line)
            continue
        if table:
            blocks.append(("table", "\n".join(table)))
            table = []
        if line.strip() and not line.startswith("# "):
            blocks.append(("p", line.strip()))
    if table:
        blocks.append(("table", "\n".join(table)))
    return blocks


def write_report(folder) -> tuple[Path, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such results folder")
    records = records_in(folder)   # valid records only: names checked, so paths stay inside
    page = Page()
    page.heading(f"Report: {folder.name}", 1)
    page.text(f"Made {time.strftime('%Y-%m-%d %H:%M')} from {len(records)} result record(s) in this folder; "
              "no log was read.")
    ok = [r for r in records if r.get("status") == "ok"]
    for record in records:
        if record.get("status") != "ok":
            page.text(f"{record['model']}: failed ({record.get('error', 'no error recorded')}).")

    _tables_section(page, folder)
    by_dataset = {}
    for record in ok:
        by_dataset.setdefault(record["dataset"], []).append(record)
    for dataset, group in by_dataset.items():
        _roc_section(page, folder, dataset, group)
        _maps_section(page, folder, dataset, group)
        _dataset_section(page, folder, dataset, group)
    if not ok:
        page.text("No successful run in this folder: nothing to plot.")

    md_path, html_path = folder / "report.md", folder / "report.html"
    write_text(md_path, page.markdown())
    write_text(html_path, page.html(f"Report: {folder.name}"))
    return md_path, html_path


def _cells_of(table_text: str) -> tuple[list[str], list[list[str]]]:
    """(header, cell texts) of a pipe table written by ``tables.markdown`` (the rule line skipped)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table_text.strip().splitlines()
            if not set(line.strip()) <= set("|-: ")]
    return rows[0], rows[1:]


def _tables_section(page: Page, folder: Path) -> None:
    """comparison.md's text with its tables made from comparison.json's rows, then the other
    tables of the folder (study.md, trials.md)."""
    documents = [folder / "comparison.md"] + sorted(p for p in folder.glob("*.md")
                                                    if p.name not in ("comparison.md", "report.md"))
    for path in documents:
        if not path.exists():
            continue
        page.heading(path.stem.replace("_", " ").capitalize())
        summary = path.with_suffix(".json")
        made = iter(json_tables(json.loads(summary.read_text()))) if path.name == "comparison.md" and summary.exists() else None
        for kind, content in _markdown_tables(path.read_text()):
            if kind != "table":
                page.text(content)
            else:
                page.table(*(next(made) if made is not None else _cells_of(content)))
    for plot in ("test_auc_by_epoch.png", "valid_auc_by_step.png", "loss_curves.png"):
        if (folder / plot).exists():
            page.image(folder / plot, plot.replace("_", " ").removesuffix(".png"))


def _roc_section(page: Page, folder: Path, dataset: str, records: list[dict]) -> None:
    page.heading(f"ROC curves on the {dataset} test split")
    curves, missing = {}, []
    for record in records:
        predictions = read_predictions(record)
        if predictions is None or not len(predictions["score"]):
            missing.append(record["model"])
            continue
        name = record["model"] if record["model"] not in curves else Path(record["record_path"]).stem
        curves[name] = (predictions["score"], predictions["label"], weighted_auc(predictions["score"], predictions["label"]))
    if curves:
        path = figures.roc_figure(curves, folder / f"roc_{dataset}.png", f"Test ROC, {dataset}")
        page.image(path, f"ROC of every model's test predictions on {dataset} (best-validation checkpoint)")
    if missing:
        page.text(f"No saved predictions for: {', '.join(missing)} (runs made before predictions were saved).")


def _maps_section(page: Page, folder: Path, dataset: str, records: list[dict]) -> None:
    page.heading(f"What MMa4CTR's network sees ({dataset})")
    drawn = False
    for record in records:
        predictions = read_predictions(record)
        if predictions is None or "hidden" not in predictions:
            continue
        labels = predictions["label"][predictions["sample_index"]]
        stem = re.sub(r"[^A-Za-z0-9._+-]", "_", str(record.get("cell") or record["model"]))
        hidden, method = figures.map_figure(predictions["hidden"], labels, folder / f"map_hidden_{stem}.png",
                                            f"{record['model']}: last hidden layer ({predictions['hidden'].shape[1]} units)")
        raw, _ = figures.map_figure(predictions["raw_input"], labels, folder / f"map_input_{stem}.png",
                                    f"{record['model']}: raw input ({predictions['raw_input'].shape[1]} values)")
        page.image(hidden, f"{stem}: hidden layer of a test sample, coloured by label ({method})")
        page.image(raw, f"{stem}: the same rows' raw input, for contrast ({method})")
        if "UMAP" not in method:
            page.text("umap-learn is not installed, so the maps use PCA (pip install umap-learn for UMAP).")
        drawn = True
        break
    others = sorted({r["model"] for r in records if r["model"] != "MMa4CTR"})
    if not drawn:
        page.text("No MMa4CTR run with a saved hidden-layer sample in this folder.")
    if others:
        page.text(f"No hidden-layer map for {', '.join(others)}: only MMa4CTR saves one.")


def _dataset_section(page: Page, folder: Path, dataset: str, records: list[dict]) -> None:
    page.heading(f"Dataset: {dataset}")
    for line in protocol_lines(records):
        page.text(line)
    page.text(cold_items_line(records))
    stats = dataset_statistics(records[0])
    if stats is None:
        page.text("The converted dataset named by the records is not on this machine: no statistics.")
        return
    manifest = stats["manifest"]
    source = "generated sample" if manifest.get("synthetic") else "real raw files"
    page.text(f"{stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions "
              f"({source}; label: {manifest.get('label', '?')}, positive rate {manifest.get('label_rate', float('nan')):.4f}).")
    rates = manifest.get("action_rates") or manifest.get("label_rates")
    if rates:
        path = figures.rates_figure(rates, folder / f"label_rates_{dataset}.png", f"{dataset}: positive rate per action")
        page.image(path, "Positive rate of each action (and the weighted label), negatives per positive annotated")
    path = figures.counts_figure(stats["per_user"], stats["per_item"], folder / f"counts_{dataset}.png",
                                 f"{dataset}: interactions per user and per item")
    page.image(path, "Interactions per user and per item (log-log)")


def cold_items_line(records: list[dict]) -> str:
    """Test rows on items never seen in training, as each record counted them on its own split
    (``test_by_coldness``); one entry per distinct split."""
    seen, parts = set(), []
    for record in records:
        groups = record.get("test_by_coldness") or {}
        cold, rows = groups.get("cold_items") or {}, (record.get("split_sizes") or {}).get("test")
        split = split_words(record.get("split"))
        if "rows" not in cold or not rows or split in seen:
            continue
        seen.add(split)
        parts.append(f"{cold['rows']:,} of {rows:,} test rows ({cold['rows'] / rows:.1%}) on items never seen in "
                     f"training, split {split} (as {record.get('cell') or record['model']} recorded it)")
    if not parts:
        return "Cold items: no record here counted its test rows by coldness."
    return "Cold items: " + "; ".join(parts) + "."
