"""Where ``properties/`` is, and reading settings from it: the one home of every default.

In a clone the folder is the top-level ``properties/``; in an installed wheel the same files are
shipped inside the package (``recbole_mma4ctr/properties/``). Code never carries a fallback value
of its own: it asks for a key and a missing key is an error that says which file should hold it.
Importing this module is cheap (no RecBole, no torch), so converters and the CLI can use it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import SettingError

_HERE = Path(__file__).resolve().parent
MISSING = object()


@lru_cache(maxsize=1)
def properties_dir() -> Path:
    """The properties folder: inside the package when installed, else the clone's top level."""
    for candidate in (_HERE / "properties", _HERE.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise SettingError(f"properties/overall.yaml not found (looked in {_HERE / 'properties'} and "
                       f"{_HERE.parent / 'properties'}): the package is installed without its settings")


def read_yaml(path) -> dict:
    """A YAML settings file as a dict, read with the safe loader (tags never build objects)."""
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise SettingError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SettingError(f"{path}: expected 'key: value' lines, found a {type(loaded).__name__}")
    return loaded


def tooling(section: str) -> dict:
    """One section (``compare``, ``engine``, ``tune``, ``report``) of ``properties/tooling.yaml``:
    the defaults of the tooling around the runs."""
    return dict(setting(read_yaml(properties_dir() / "tooling.yaml"), section, "properties/tooling.yaml"))


def setting(config, key: str, where: str = "properties/overall.yaml"):
    """``config[key]``, refusing a key that no settings file defines (``None`` is a valid value)."""
    values = getattr(config, "final_config_dict", config)
    if key not in values:
        raise SettingError(f"setting {key!r} is missing: it belongs in {where}")
    return values[key]


def command_options(*sections: str) -> dict:
    """The command line's own options (``properties/commands.yaml``) of ``sections``, merged in
    order (a later section's default wins): e.g. ``command_options("common", "compare")``."""
    path = properties_dir() / "commands.yaml"
    table, options = read_yaml(path), {}
    for section in sections:
        values = table.get(section)
        if not isinstance(values, dict):
            raise SettingError(f"section {section!r} is missing: it belongs in {path}")
        options.update(values)
    return options
