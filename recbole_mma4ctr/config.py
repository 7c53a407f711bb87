"""Build a RecBole Config from the project's properties/ files and command-line overrides.

Order (later wins): ``properties/overall.yaml`` < ``properties/dataset/<dataset>.yaml`` <
``properties/model/<model>.yaml`` < user ``--config_files`` < ``--key=value`` overrides.
A feature-fair baseline ``<Model>+mm`` (``feature_fair.py``) adds, before its model's file, the
fused-vector and profile keys of ``properties/model/MMa4CTR.yaml`` (``FEATURE_KEYS``: the same
features MMa4CTR gets, their defaults kept in one place) and ``properties/feature_fair.yaml``;
its RecBole model is ``<Model>`` and ``config['feature_fair']`` is True.

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
from typing import NamedTuple

import yaml
from recbole.config import Config

from .compat import recbole_stack_settings
from .metrics import register_metrics
from .model.feature_fair import MARKER, split_name
from .model.tasks import SINGLE_TASK_OF
from .settings import properties_dir
from .utils import get_model

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
# MMa4CTR's settings that decide its item vector and user profiles: a +mm baseline reads the same
FEATURE_KEYS = ("fusion", "fusion_max_dim", "fusion_modality_max_dim", "profile_length", "profile_source",
                "profile_device_field")


class KeysOf(NamedTuple):
    """A settings layer made of some keys of a file (``property_files``), not all of it."""

    path: str
    keys: tuple


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

        recbole_stack_settings()

    def _load_config_files(self, file_list):
        """RecBole's merge of the files in order, read safely; a ``KeysOf`` entry adds only its keys."""
        merged = {}
        for entry in file_list or []:
            path, keys = (entry.path, entry.keys) if isinstance(entry, KeysOf) else (entry, None)
            with open(path, encoding="utf-8") as handle:
                values = yaml.load(handle.read(), Loader=self.yaml_loader) or {}
            merged.update(values if keys is None else {key: values[key] for key in keys if key in values})
        return merged

    def _convert_config_dict(self, config_dict):
        for key in config_dict:
            config_dict[key] = typed_value(config_dict[key])
        return config_dict


def property_files(model_name: str, dataset: str) -> list:
    """overall.yaml (required) plus the dataset's and the model's files where they exist; for
    ``<Model>+mm`` also MMa4CTR's ``FEATURE_KEYS`` and feature_fair.yaml, before ``<Model>.yaml``;
    for a multi-task variant of a single-task model (``multitask.SINGLE_TASK_OF``) that model's
    file before its own."""

    folder = properties_dir()
    base, feature_fair = split_name(model_name)
    files = [str(folder / "overall.yaml")] + [str(p) for p in [folder / "dataset" / f"{dataset}.yaml"] if p.is_file()]
    if feature_fair:
        files += [KeysOf(str(folder / "model" / "MMa4CTR.yaml"), FEATURE_KEYS), str(folder / "feature_fair.yaml")]
    models = [SINGLE_TASK_OF[base], base] if base in SINGLE_TASK_OF else [base]
    return files + [str(p) for p in [folder / "model" / f"{name}.yaml" for name in models] if p.is_file()]


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
    """The effective Config for one run. ``model`` is a name (``DIN+mm`` included) or a model class."""
    register_metrics()
    model_name = model if isinstance(model, str) else model.__name__
    if isinstance(config_files, str):
        config_files = config_files.split()
    files = property_files(model_name, dataset) + [str(Path(f)) for f in (config_files or [])]
    for path in files:
        if not Path(path.path if isinstance(path, KeysOf) else path).exists():
            raise FileNotFoundError(f"config file {path} not found")
    if isinstance(model, str):
        model = get_model(model)
    values = {key: typed_value(value) for key, value in dict(overrides or {}).items()}
    if MARKER in values:
        raise ValueError(f"--{MARKER} is set by the model name: write --model=<Model>+mm instead")
    if split_name(model_name)[1]:
        values[MARKER] = True
    return MMa4CTRConfig(model=model, dataset=dataset, config_file_list=files, config_dict=values)


__all__ = ["FEATURE_KEYS", "KeysOf", "MMa4CTRConfig", "build_config", "parse_overrides", "property_files", "typed_value"]
