"""Find the raw files for a dataset name, or generate a sample, and convert them if needed.

For each converted dataset (``CONVERTERS``): the real files in ``<raw_root>/<RAW_FOLDERS[name]>/``
when present (``wechat/``; ``TikTok2019ICME/track1/`` for ``tiktok``, the paper's tree, whose
folder name differs from the dataset name); otherwise a generated sample in
``<synthetic_root>/<name>/`` (written once, seeded, same formats, with ``SYNTHETIC.json`` saying
what it is; regenerated when its scale, seed or generator version differ from the config). The
atomic files land in ``<data_path>/<name>/`` and are rebuilt only when the inputs or settings
change (manifest fingerprint). Any other dataset name is taken as a RecBole atomic dataset
already in ``<data_path>/<name>/``.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import tiktok, wechat
from .atomic import log, read_json_or_none

CONVERTERS = {"wechat": wechat, "tiktok": tiktok}
RAW_FOLDERS = {"wechat": "wechat", "tiktok": "TikTok2019ICME/track1"}
# Config key (properties/dataset/<name>.yaml) -> converter setting, per dataset.
SETTING_KEYS = {
    "wechat": {"label_action": "label", "min_user_actions": "min_user_actions", "pca_variance": "variance",
               "token_maxlen": "token_maxlen", "text_recipe": "text_recipe", "text_max_dim": "text_max_dim",
               "visual_dim": "visual_dim", "acoustic_dim": "acoustic_dim", "textual_dim": "textual_dim",
               "feed_embedding": "feed_embedding", "dedupe": "dedupe", "row_order": "row_order",
               "device_choice": "device_choice"},
    "tiktok": {"label_action": "label", "min_user_interactions": "min_user_interactions", "pca_variance": "variance",
               "visual_dim": "visual_dim", "acoustic_dim": "acoustic_dim", "textual_dim": "textual_dim",
               "chunk_rows": "chunk_rows"},
}
# Settings whose explicit ``~`` means something (PCA keeping the variance share instead of a width).
NULLABLE_SETTINGS = {"visual_dim", "acoustic_dim", "textual_dim"}


def converter_settings(config) -> dict:
    """The converter settings a Config carries for its dataset (keys in properties/dataset/<name>.yaml)."""
    settings = {}
    for key, name in SETTING_KEYS.get(config["dataset"], SETTING_KEYS["wechat"]).items():
        if config[key] is not None or (name in NULLABLE_SETTINGS and key in config.final_config_dict):
            settings[name] = config[key]
    return settings


def generator(name: str):
    """(the function writing a generated raw sample for ``name``, its generator version)."""
    if name == "tiktok":
        from .synthetic_tiktok import GENERATOR_VERSION, write_tiktok_raw

        return write_tiktok_raw, GENERATOR_VERSION
    from .synthetic import GENERATOR_VERSION, write_wechat_raw

    return write_wechat_raw, GENERATOR_VERSION


def synthetic_matches(raw_dir: Path, scale: str, seed: int, name: str = "wechat") -> bool:
    info = read_json_or_none(raw_dir / "SYNTHETIC.json")
    if info is None:
        return False
    return (info.get("scale") == scale and int(info.get("seed", -1)) == int(seed)
            and info.get("version") == generator(name)[1])


def raw_source(name: str, raw_root, synthetic_root, scale: str = "sample", seed: int = 2024) -> Path:
    """The raw folder to convert: real files if present, else a (generated) synthetic sample."""
    converter = CONVERTERS[name]
    real = Path(raw_root) / RAW_FOLDERS[name]
    if converter.has_raw_files(real):
        log(f"using the raw {name} files in {real}")
        return real
    sample = Path(synthetic_root) / name
    if not (converter.has_raw_files(sample) and synthetic_matches(sample, scale, seed, name)):
        log(f"no raw {name} files in {real}: generating a {scale}-scale sample (seed {seed}) in {sample}")
        generator(name)[0](sample, scale=scale, seed=seed)
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
