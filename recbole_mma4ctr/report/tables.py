"""The one table renderer: every table the project writes (comparison, seeds, paired, challenge,
trials, studies) is a header and rows of cell texts, rendered here as markdown, HTML or CSV.

The modules that make a table only decide what its cells say; how a table is spelled lives here.
"""

from __future__ import annotations

import csv
import html as html_text
import io
import json
import math

from ..files import write_text


def show(value) -> str:
    """A value as a cell: floats to 4 significant digits, lists and dicts as JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def cells_of(rows: list[dict], columns: list[str], decimals=()) -> list[list[str]]:
    """Cell texts of ``rows`` (dicts) in ``columns``: floats of the ``decimals`` columns (metrics)
    to 4 decimals, ``seconds`` to 1, other floats (parameters) to 4 significant digits; missing
    values as '-'."""
    table = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
                cells.append("-")
            elif isinstance(value, float) and column in decimals:
                cells.append(f"{value:.4f}")
            elif isinstance(value, float) and column == "seconds":
                cells.append(f"{value:.1f}")
            else:
                cells.append(show(value))
        table.append(cells)
    return table


def _line(cells) -> str:
    return "|" + "".join(f" {str(cell).replace('|', '/')} |" if str(cell) else " |" for cell in cells)


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    """A pipe table: the header, the rule, one line per row ('|' inside a cell becomes '/')."""
    return "\n".join([_line(headers), "|" + "---|" * len(headers)] + [_line(row) for row in rows])


def html(headers: list[str], rows: list[list[str]]) -> str:
    """The same table as an HTML ``<table>``, every cell escaped."""
    head = "".join(f"<th>{html_text.escape(str(cell))}</th>" for cell in headers)
    body = "".join("<tr>" + "".join(f"<td>{html_text.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_csv(path, rows: list[dict]) -> None:
    """``rows`` (dicts) as CSV, columns in order of first appearance, lists as JSON; written atomically."""
    columns = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    write_text(path, buffer.getvalue())
