"""Find the raw files for a dataset name, or generate a sample, and convert them if needed.

For ``wechat``: the real files in ``<raw_root>/wechat/`` when present; otherwise a generated
sample in ``<synthetic_root>/wechat/`` (written once, seeded, same formats, with
``SYNTHETIC.json`` saying what it is). The atomic files land in ``<data_path>/wechat/`` and are
rebuilt only when the inputs or settings change (manifest fingerprint). Any other dataset name
is taken as a RecBole atomic dataset already in ``<data_path>/<name>/``.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import wechat
from .atomic import log, read_json_or_none

CONVERTERS = {"wechat": wechat}


def converter_settings(config) -> dict:
    """The converter settings a Config carries (keys in properties/dataset/<name>.yaml)."""
    settings = {}
    for key, name in (("label_action", "label"), ("min_user_actions", "min_user_actions"),
                      ("pca_variance", "variance"), ("token_maxlen", "token_maxlen")):
        if config[key] is not None:
            settings[name] = config[key]
    return settings


def synthetic_matches(raw_dir: Path, scale: str, seed: int) -> bool:
    info = read_json_or_none(raw_dir / "SYNTHETIC.json")
    if info is None:
        return False
    from .synthetic import GENERATOR_VERSION

    return (info.get("scale") == scale and int(info.get("seed", -1)) == int(seed)
            and info.get("version") == GENERATOR_VERSION)


def raw_source(name: str, raw_root, synthetic_root, scale: str = "sample", seed: int = 2024) -> Path:
    """The raw folder to convert: real files if present, else a (generated) synthetic sample."""
    converter = CONVERTERS[name]
    real = Path(raw_root) / name
    if converter.has_raw_files(real):
        log(f"using the raw {name} files in {real}")
        return real
    sample = Path(synthetic_root) / name
    if not (converter.has_raw_files(sample) and synthetic_matches(sample, scale, seed)):
        from .synthetic import write_wechat_raw

        log(f"no raw {name} files in {real}: generating a {scale}-scale sample (seed {seed}) in {sample}")
        write_wechat_raw(sample, scale=scale, seed=seed)
    else:
        log(f"no raw {name} files in {real}: using the generated {scale} sample in {sample}")
    return sample


def ensure_dataset(config) -> dict | None:
    """Make ``<data_path>/<dataset>/`` ready for RecBole; returns its manifest when we built it."""
    name = config["dataset"]
    atomic_dir = Path(config["data_path"])
    if name not in CONVERTERS:
        if not atomic_dir.exists():
            raise FileNotFoundError(f"{atomic_dir}: no atomic dataset folder for {name!r}")
        manifest = atomic_dir / "manifest.json"
        return json.loads(manifest.read_text()) if manifest.exists() else None
    raw_dir = raw_source(name, config["raw_root"], config["synthetic_root"],
                         str(config["synthetic_scale"]), int(config["synthetic_seed"]))
    return CONVERTERS[name].convert(raw_dir, atomic_dir, converter_settings(config))
