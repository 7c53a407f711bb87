"""Build a RecBole Config from the project's properties/ files and command-line overrides.

Order (later wins): ``properties/overall.yaml`` < ``properties/dataset/<dataset>.yaml`` <
``properties/model/<model>.yaml`` < user ``--config_files`` < ``--key=value`` overrides.

Nothing a user writes is executed. RecBole 1.2.1 ``eval()``s every string value of a
``config_dict`` (and of its own command line) and reads YAML with PyYAML's FullLoader, which
builds Python objects from ``!!python/name:`` tags. ``MMa4CTRConfig`` replaces both: strings are
read as Python literals (``ast.literal_eval``) or YAML scalars/collections (safe loader), else
kept as text; files are read with the safe loader. RecBole's own reading of ``sys.argv`` is
switched off, so a program embedding this (pytest, Ray workers) never leaks its arguments.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml
from recbole.config import Config

from .defaults import SettingError, properties_dir

# RecBole's YAML float resolver (so '1e-3' is a float, as in RecBole), on the safe loader.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class SafeSettingsLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus RecBole's float resolver."""


SafeSettingsLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
PLAIN_TYPES = (str, int, float, bool, list, tuple, dict, type(None))


def typed_value(text):
    """A setting given as text -> its value, as RecBole would type it, without running it.

    ``'[128,32,4]'`` -> list, ``'0.001'`` -> float, ``'True'``/``'true'`` -> True, ``'None'``/``'~'``
    -> None, ``"{'split': {'RS': [0.8, 0.1, 0.1]}}"`` -> dict, ``'vat_concat'`` -> the same text.
    Anything that is not a literal (a call, a name lookup) stays the text it was."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        value = yaml.load(text, Loader=SafeSettingsLoader)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, PLAIN_TYPES) else text


class MMa4CTRConfig(Config):
    """RecBole's Config that never executes a setting and never reads ``sys.argv``."""

    def _load_cmd_line(self):
        return {}

    def _build_yaml_loader(self):
        return SafeSettingsLoader

    def compatibility_settings(self):
        # RecBole's own version fails on numpy 2 (it reads np.float_); compat.py says why
        from .compat import recbole_stack_settings

        recbole_stack_settings()

    def _convert_config_dict(self, config_dict):
        for key in config_dict:
            config_dict[key] = typed_value(config_dict[key])
        return config_dict


def property_files(model_name: str, dataset: str) -> list[str]:
    """overall.yaml (required) plus the dataset's and the model's files where they exist."""
    folder = properties_dir()
    optional = [folder / "dataset" / f"{dataset}.yaml", folder / "model" / f"{model_name}.yaml"]
    return [str(folder / "overall.yaml")] + [str(path) for path in optional if path.is_file()]


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
    values = {key: typed_value(value) for key, value in dict(overrides or {}).items()}
    return MMa4CTRConfig(model=model, dataset=dataset, config_file_list=files, config_dict=values)


__all__ = ["MMa4CTRConfig", "SettingError", "build_config", "parse_overrides", "property_files", "typed_value"]
