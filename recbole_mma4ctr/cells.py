"""Cells: one experiment described by plain data, so it can travel to any Ray worker.

``make_cell`` checks the names, reads the user's config files once (their text travels with the
cell, so a node without the driver's files builds the same config), types the ``--key=value``
settings without executing them, and adds the protocol's settings file. ``cell_config`` builds
the effective config every path runs with (the epoch marks applied). The cell's ``key`` and
``identity`` (``resume_key.cell_identity``) are fixed by the driver once the data are prepared.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .config import build_config, typed_value
from .errors import CellError, SettingError
from .record import NAME, new_run_id
from .settings import properties_dir, read_yaml
from .utils import check_model

TASKS_KEY = "challenge_tasks"   # a protocol file naming challenge tasks is a challenge protocol


def check_name(kind: str, value) -> str:
    """A model or dataset name is a plain name: it becomes part of file names, never a path."""
    text = str(value)
    if not NAME.match(text) or ".." in text:
        raise CellError(f"--{kind}={text!r} is not a plain name (letters, digits, '_', '-', '.', '+'; no '/' or '..')")
    return text


def check_model_name(model: str) -> str:
    """A model this plugin or RecBole 1.2.1 has (``<Model>+mm`` included), named plainly."""

    try:
        return check_model(check_name("model", model))
    except ValueError as error:
        raise CellError(str(error)) from None


def protocols() -> list[str]:
    return sorted(path.stem for path in (properties_dir() / "protocol").glob("*.yaml"))


def protocol_file(protocol: str) -> Path:
    path = properties_dir() / "protocol" / f"{check_name('protocol', protocol)}.yaml"
    if not path.is_file():
        raise CellError(f"--protocol={protocol!r}: no such protocol; protocols: {', '.join(protocols()) or 'none'}")
    return path


def protocol_settings(protocol: str | None) -> dict:
    """The protocol file's settings; {} without a protocol."""
    if not protocol:
        return {}
    return read_yaml(protocol_file(protocol))


def is_challenge(protocol: str | None) -> bool:
    """A protocol is a challenge protocol when its file names challenge tasks."""
    return TASKS_KEY in protocol_settings(protocol)


def read_config_texts(config_files) -> list[tuple[str, str]]:
    """(name, text) of every user config file, read now, each checked to be safe YAML settings."""
    if isinstance(config_files, str):
        config_files = config_files.split()
    texts = []
    for name in config_files or []:
        path = Path(name)
        if not path.is_file():
            raise CellError(f"config file {path} not found")
        read_yaml(path)   # one-line error naming file and line if it is not YAML settings
        texts.append((str(path), path.read_text(encoding="utf-8")))
    return texts


def make_cell(model: str, dataset: str, config_files=None, settings=None, marks=None, kind: str = "run",
              protocol: str | None = None, name: str | None = None, extra: dict | None = None, **flags) -> dict:
    """A cell: plain data only (names, texts, typed settings). ``flags``: ``prepare`` (False when
    the driver prepared the data), ``key``."""
    check_model_name(model)
    check_name("dataset", dataset)
    texts = []
    if protocol:

        if is_challenge(protocol) and not {"challenge_action", "challenge_actions"} & set(extra or {}):
            raise CellError(f"--protocol={protocol} trains one run per action and scores them together: it is for "
                            f"--compare (a single run, tune or study takes --label_action=... instead)")
        path = protocol_file(protocol)
        texts.append((str(path), path.read_text(encoding="utf-8")))
    texts += read_config_texts(config_files)
    typed = {str(k): typed_value(v) for k, v in (settings or {}).items()}
    cell = {"model": model, "dataset": dataset, "config_texts": texts, "settings": typed,
            "marks": sorted({int(m) for m in marks}) if marks else None, "kind": kind, "protocol": protocol,
            "cell": name or model, "extra": dict(extra or {}), "run_id": new_run_id(),
            "prepare": flags.get("prepare", True), "key": flags.get("key")}
    return cell


def layered_settings(cell: dict) -> dict:
    """The user's layers of one cell merged (config files in order, then settings): what the
    properties files do not already say. Used for the resume key and to find ``results_dir``."""
    merged = {}
    for name, text in cell["config_texts"]:
        import yaml

        merged.update(yaml.safe_load(text) or {})
    merged.update(cell["settings"])
    return merged


def run_settings(cell: dict) -> dict:
    """The cell's ``--key=value`` settings plus what its epoch marks fix: as many epochs as the
    last mark and no early stop (every mark needs its epoch)."""
    settings = dict(cell.get("settings") or {})
    marks = sorted({int(m) for m in cell.get("marks") or []})
    if marks:
        settings["epochs"] = max(marks)
        settings["stopping_step"] = max(marks) + 1
    return settings


def config_files(cell: dict, scratch: Path) -> list[str]:
    """The cell's config files (protocol, then the user's), written into ``scratch`` from the texts it carries."""
    files = []
    for index, (name, text) in enumerate(cell.get("config_texts") or []):
        path = scratch / f"{index:02d}-{Path(name).name}"
        path.write_text(text, encoding="utf-8")
        files.append(str(path))
    return files


def cell_config(cell: dict):
    """The effective RecBole Config of a cell: what ``run.run_cell`` trains with and what its
    identity is computed from."""
    with tempfile.TemporaryDirectory(prefix="rmc-config-") as scratch:
        return build_config(cell["model"], cell["dataset"], config_files(cell, Path(scratch)), run_settings(cell))


def results_dir_of(cell: dict) -> str:
    """Where the cell's record goes: the user's ``results_dir`` layer, else overall.yaml's."""
    layered = layered_settings(cell)
    if layered.get("results_dir"):
        return str(layered["results_dir"])
    value = read_yaml(properties_dir() / "overall.yaml").get("results_dir")
    if not value:
        raise SettingError("setting 'results_dir' is missing: it belongs in properties/overall.yaml")
    return str(value)
