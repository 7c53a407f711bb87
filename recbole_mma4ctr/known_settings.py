"""Every setting some layer defines, where it is set, its default and its comment there.

The registry behind two jobs: refusing a setting no layer defines (a misspelling is an error, not
a key RecBole silently carries), and ``--help`` / ``--help=SETTING``. The layers of a run, later
winning, are RecBole 1.2.1's own files (``overall.yaml``, ``model/<Model>.yaml``,
``dataset/sample.yaml``, ``dataset/<dataset>.yaml``; the ``quick_start_config/`` files it adds by
model type), then this project's (``config.property_files``: ``overall.yaml``,
``dataset/<dataset>.yaml``, for ``<Model>+mm`` MMa4CTR's feature keys and ``feature_fair.yaml``,
``model/<Model>.yaml``), then the protocol's file. The command line's own options (the engine's
and each mode's) are ``properties/commands.yaml``. A key is known for a run when one of its
layers defines it; ``--allow_unknown_settings`` (true, or a list of keys) lets a user pass keys of
their own RecBole extension. Files are only read (safe YAML), never executed.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .cells import protocol_file
from .config import KeysOf, property_files, SafeSettingsLoader, typed_value
from .errors import UsageError
from .model.feature_fair import split_name
from .settings import command_options, properties_dir, read_yaml

# mode -> the sections of commands.yaml that hold its options
MODE_SECTIONS = {"run": ("common", "run"), "compare": ("common", "compare", "engine"),
                 "tune": ("common", "tune", "engine"), "study": ("common", "study", "engine")}
MODE_NAMES = {"run": "a single run", "compare": "--compare", "tune": "--tune", "study": "--study"}
# settings whose value must be at least this (RecBole would fail late or write an empty record)
MINIMUM = {"epochs": 1, "train_batch_size": 1, "eval_batch_size": 1}
POSITIVE = ("learning_rate",)
# a key YAML reads as the same text (not a number, flag or null)
PLAIN_NAME = re.compile(r"^(?!(?:true|false|yes|no|on|off|null|y|n)$)[A-Za-z_][\w.-]*$", re.I)


@dataclass(frozen=True)
class Entry:
    """One key as a settings file sets it."""

    key: str
    value: object
    path: Path
    line: int
    comment: str      # on the key's own line (with the indented comment lines that continue it)
    above: str        # the comment lines directly above the key (often a group's heading)

    def where(self) -> str:
        return f"{shown_path(self.path)}, line {self.line}"


def recbole_properties() -> Path:
    """RecBole's own properties folder, found without importing RecBole."""
    return Path(importlib.util.find_spec("recbole").submodule_search_locations[0]) / "properties"


def shown_path(path) -> str:
    """A settings file as a user would look for it: ``properties/...`` or ``recbole/properties/...``."""
    path = Path(path)
    for root, label in ((properties_dir(), "properties"), (recbole_properties(), "recbole/properties")):
        if path.is_relative_to(root):
            return f"{label}/{path.relative_to(root).as_posix()}"
    return str(path)


def key_text(node) -> str:
    """A mapping key as ``str()`` of its loaded value shows it (``true:`` -> ``'True'``, ``0.01:`` -> ``'0.01'``)."""
    name = node.value
    if isinstance(node, yaml.ScalarNode) and not node.style and not PLAIN_NAME.match(name):
        return str(yaml.safe_load(name))
    return str(name)


def key_lines(text: str) -> dict[tuple, int]:
    """The 1-based line of every mapping key of a YAML text, by its path of keys (``str()`` of each):
    ``('eval_args', 'split')``."""
    lines = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = prefix + (key_text(key_node),)
                lines.setdefault(path, key_node.start_mark.line + 1)
                walk(value_node, path)

    walk(yaml.compose(text, Loader=yaml.SafeLoader), ())
    return lines


def inline_comment(line: str) -> str:
    """The text after a ``#`` that starts a comment on a line (not one inside quotes)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[index + 1:].strip()
    return ""


def comments_at(lines: list[str], number: int) -> tuple[str, str]:
    """(the comment on line ``number`` with the indented comment lines that continue it, the
    comment lines directly above it)."""
    own = inline_comment(lines[number - 1])
    parts = [own] if own else []
    for line in lines[number:] if own else []:
        if not (line[:1].isspace() and line.strip().startswith("#")):
            break
        parts.append(line.strip()[1:].strip())
    above = []
    for line in reversed(lines[:number - 1]):
        if not line.startswith("#"):
            break
        above.insert(0, line[1:].strip())
    return " ".join(parts), " ".join(above)


def file_entries(path, keys=None, section: str | None = None) -> dict[str, Entry]:
    """The top-level keys of a settings file (only ``keys`` where given; the keys of one top-level
    ``section`` where given), each with its value, line and comment."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    values = yaml.load(text, Loader=SafeSettingsLoader) or {}
    if section is not None:
        values = values.get(section) or {}
    lines, rows = key_lines(text), text.splitlines()
    prefix = (section,) if section is not None else ()
    return {key: Entry(key, value, path, lines[prefix + (str(key),)], *comments_at(rows, lines[prefix + (str(key),)]))
            for key, value in values.items() if keys is None or key in keys}


def settings_files(model: str, dataset: str, protocol=None) -> list:
    """The files of a run's layers in the order they apply (RecBole's, the project's, the protocol's)."""
    root = recbole_properties()
    recbole = [root / "overall.yaml", root / "model" / f"{split_name(model)[0]}.yaml", root / "dataset" / "sample.yaml",
               root / "dataset" / f"{dataset}.yaml"]
    layers = [path for path in recbole if path.is_file()] + property_files(model, dataset)
    return layers + ([protocol_file(protocol)] if protocol else [])


def layer_entries(layer) -> dict[str, Entry]:
    if isinstance(layer, KeysOf):
        return file_entries(layer.path, keys=layer.keys)
    return file_entries(layer)


def quick_start_keys() -> set[str]:
    """Keys RecBole's quick-start files set by model type: known for every model."""
    return {key for path in sorted((recbole_properties() / "quick_start_config").glob("*.yaml"))
            for key in read_yaml(path)}


def every_entry(key: str) -> list[Entry]:
    """Every file RecBole or this project ships that sets ``key`` (for ``--help=SETTING``)."""
    root, own = recbole_properties(), properties_dir()
    datasets = sorted((path for path in (root / "dataset").glob("*.yaml") if not path.stem.endswith("url")),  # url lists
                      key=lambda path: (path.stem != "sample", path.stem))   # sample.yaml applies first
    files = [root / "overall.yaml", *sorted((root / "model").glob("*.yaml")), *datasets,
             *sorted((root / "quick_start_config").glob("*.yaml")),
             own / "overall.yaml", *sorted((own / "dataset").glob("*.yaml")), own / "feature_fair.yaml",
             *sorted((own / "model").glob("*.yaml")), *sorted((own / "protocol").glob("*.yaml"))]
    mentions = re.compile(rf"^\s*{re.escape(key)}\s*:", re.M)   # read only the files that can set it
    files = [path for path in files if path.is_file() and mentions.search(path.read_text(encoding="utf-8"))]
    found = [entries[key] for entries in map(file_entries, files) if key in entries]
    for section in read_yaml(own / "commands.yaml"):
        entries = file_entries(own / "commands.yaml", section=section)
        found += [entries[key]] if key in entries else []
    return found


def mode_of_option(key: str) -> list[str]:
    """The modes whose command-line options include ``key``."""
    return [mode for mode, sections in MODE_SECTIONS.items() if key in command_options(*sections)]


def allowed_keys(value) -> bool | set:
    """``--allow_unknown_settings``: True / False, or the set of keys it names."""
    value = typed_value(value) if isinstance(value, str) else value
    if isinstance(value, bool) or value is None:
        return bool(value)
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    keys = {str(name).strip() for name in names if str(name).strip()}
    if not keys:
        raise UsageError("--allow_unknown_settings takes true, false or a comma-separated list of setting names")
    return keys


def unknown(key: str, known, where: str, otherwise: str, what: str = "setting") -> UsageError:
    """``unknown setting 'learnig_rate' (did you mean learning_rate?)``, after ``file, line N: `` where
    it came from a file; ``otherwise`` says what to do when nothing known is close."""
    guess = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    prefix = f"{where}: " if where else ""
    if guess:
        return UsageError(f"{prefix}unknown {what} {key!r} (did you mean {guess[0]}?)")
    return UsageError(f"{prefix}unknown {what} {key!r}: {otherwise}")


class Registry:
    """The settings known to one command: the layers of its models on its dataset and protocol,
    and its mode's own options."""

    def __init__(self, mode: str, models: list[str], dataset: str, protocol=None, allow=False):
        self.mode = mode
        self.options = set(command_options(*MODE_SECTIONS[mode]))
        self.defaults: dict[str, Entry] = {}      # key -> the entry that sets it last (the first model's first)
        self.known = quick_start_keys()
        for model in models:
            last = {}
            for layer in settings_files(model, dataset, protocol):
                last.update(layer_entries(layer))
            self.known.update(last)
            for key, entry in last.items():
                self.defaults.setdefault(key, entry)
        if protocol:   # a challenge protocol's per-dataset settings (split_rule: day, split_days, ...)
            tasks = read_yaml(protocol_file(protocol)).get("challenge_tasks") or {}
            self.known.update(key for task in tasks.values() for key in (task.get("settings") or {}))
        self.allow = allowed_keys(allow)

    def check_key(self, key: str, where: str = "") -> None:
        """Refuse a key no layer defines (one line, naming the file and line where it came from one)."""
        if key in self.known or self.allow is True or (isinstance(self.allow, set) and key in self.allow):
            return
        prefix = f"{where}: " if where else ""
        if where and key in self.options:
            raise UsageError(f"{prefix}{key} is a command-line option (--{key}=...), not a setting a file holds")
        other = mode_of_option(key)
        if other:
            raise UsageError(f"{prefix}--{key} is an option of {' and '.join(MODE_NAMES[m] for m in other)}, "
                             f"not of {MODE_NAMES[self.mode]}")
        raise unknown(key, self.known | (set() if where else self.options), where,
                      f"no settings file defines it (--allow_unknown_settings={key} passes a key of your own RecBole "
                      f"extension)")

    def check_value(self, key: str, value, where: str = "") -> None:
        """Refuse a value of the wrong kind for the key's default (a number where the default is a
        number, true/false where it is a flag) and training lengths and sizes that cannot train."""
        entry = self.defaults.get(key)
        default = entry.value if entry is not None else None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in MINIMUM:
            fits, expected = number and isinstance(value, int) and value >= MINIMUM[key], f"a whole number >= {MINIMUM[key]}"
        elif key in POSITIVE:
            fits, expected = number and value > 0, "a number > 0"
        elif isinstance(default, bool):
            fits, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, (int, float)):
            fits, expected = number, "a number"
        else:
            return
        if not fits:
            shown = f"{where}: {key}: {value!r}" if where else f"--{key}={value}"
            source = f" (the default is {default!r}, {entry.where()})" if entry is not None else ""
            raise UsageError(f"{shown}: expected {expected}{source}")

    def check_settings(self, settings: dict, where: str = "") -> None:
        """Settings (the command line's, after its options are taken out): every key known, every
        value fitting its default."""
        for key, value in settings.items():
            self.check_key(key, where)
            self.check_value(key, typed_value(value), where)

    def check_file(self, path, text: str) -> None:
        """A user's YAML settings file (``--config_files``, its ``text`` as read by
        ``cells.read_config_texts``): each key and value, named by file and line."""
        lines = key_lines(text)
        for key, value in (yaml.load(text, Loader=SafeSettingsLoader) or {}).items():
            where = f"{path}, line {lines[(str(key),)]}"
            self.check_key(str(key), where)
            self.check_value(str(key), value, where)

    def check_hyper(self, path, dimensions) -> None:
        """A hyper file's dimension names (``tune.read_hyper_file``), named by file and line."""
        for dimension in dimensions:
            self.check_key(dimension.name, f"{path}, line {dimension.line}")

    def check_study(self, study: dict, study_keys) -> None:
        """A study file (``studies.load_study``): its own keys (``study_keys``), the setting it varies
        and the settings of its fixed part and of its named points, named by file and line."""
        path = Path(study["path"])
        text = path.read_text(encoding="utf-8")
        lines = key_lines(text)
        for key in yaml.safe_load(text) or {}:
            if key not in study_keys:
                raise unknown(str(key), study_keys, f"{path}, line {lines[(str(key),)]}",
                              f"a study file holds {', '.join(study_keys)}", what="study key")
        points = study.get("points") or {}
        if not points and study["parameter"] != "model":     # a study over models (missing_modality) varies no setting
            self.check_key(str(study["parameter"]), f"{path}, line {lines[('parameter',)]}")
        groups = [(("settings",), study.get("settings") or {})]
        groups += [(("points", str(label)), settings or {}) for label, settings in points.items()]
        for prefix, settings in groups:
            for key, value in settings.items():
                where = f"{path}, line {lines.get(prefix + (str(key),), lines[prefix[:1]])}"
                self.check_key(str(key), where)
                self.check_value(str(key), value, where)
