"""Build a RecBole Config from the project's properties/ files and command-line overrides.

Order (later wins): ``properties/overall.yaml`` < ``properties/dataset/<dataset>.yaml`` <
``properties/model/<model>.yaml`` < user ``--config_files`` < ``--key=value`` overrides.
Overrides are passed to RecBole as ``config_dict`` strings, so RecBole converts them exactly as
it converts its own command line; RecBole's own reading of ``sys.argv`` is switched off so a
program embedding this (pytest, Ray workers) never leaks its arguments into the config.
"""

from __future__ import annotations

from pathlib import Path

from recbole.config import Config

PROPERTIES = Path(__file__).resolve().parent.parent / "properties"


class MMa4CTRConfig(Config):
    """RecBole's Config, minus its implicit parsing of ``sys.argv``."""

    def _load_cmd_line(self):
        return {}


def property_files(model_name: str, dataset: str) -> list[str]:
    candidates = [
        PROPERTIES / "overall.yaml",
        PROPERTIES / "dataset" / f"{dataset}.yaml",
        PROPERTIES / "model" / f"{model_name}.yaml",
    ]
    return [str(path) for path in candidates if path.exists()]


def parse_overrides(arguments: list[str]) -> dict[str, str]:
    """``--key=value`` arguments to a dict of strings; anything else is an error naming it."""
    overrides = {}
    for argument in arguments:
        if not argument.startswith("--") or "=" not in argument:
            raise ValueError(f"unrecognised argument {argument!r}: settings are given as --key=value")
        key, value = argument[2:].split("=", 1)
        if key in overrides and overrides[key] != value:
            raise ValueError(f"--{key} given twice with different values")
        overrides[key] = value
    return overrides


def build_config(model, dataset: str, config_files=None, overrides=None) -> Config:
    """The effective Config for one run. ``model`` is a name or a model class."""
    from .metrics import register_metrics

    register_metrics()
    model_name = model if isinstance(model, str) else model.__name__
    if isinstance(config_files, str):
        config_files = config_files.split()
    files = property_files(model_name, dataset) + [str(Path(f)) for f in (config_files or [])]
    for path in files:
        if not Path(path).exists():
            raise FileNotFoundError(f"config file {path} not found")
    if isinstance(model, str):
        from .utils import get_model

        model = get_model(model)
    return MMa4CTRConfig(model=model, dataset=dataset, config_file_list=files, config_dict=dict(overrides or {}))
