"""Find the raw files for a dataset name, or generate a sample, and convert them if needed.

For each converted dataset (``CONVERTERS``): the real files in ``<raw_root>/<RAW_FOLDERS[name]>/``
when present (``wechat/``; ``TikTok2019ICME/track1/`` for ``tiktok``, the paper's tree, whose
folder name differs from the dataset name); otherwise a generated sample in
``<synthetic_root>/<name>/`` (written once, seeded, same formats, with ``SYNTHETIC.json`` saying
what it is; regenerated when its scale, seed or generator version differ from the config). The
atomic files land in ``<data_path>/<name>/`` and are rebuilt only when the inputs or settings
change (manifest fingerprint). Any other dataset name is taken as a RecBole atomic dataset
already in ``<data_path>/<name>/``, whose files are checked first (``byo``: encoding, field
counts, labels) so RecBole never trains on a malformed one.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MissingInputError
from ..settings import setting
from . import byo, tiktok, wechat
from .atomic import folder_lock, log, read_json_or_none
from .synthetic import tiktok as synthetic_tiktok, wechat as synthetic_wechat

CONVERTERS = {"wechat": wechat, "tiktok": tiktok}
RAW_FOLDERS = {"wechat": "wechat", "tiktok": "TikTok2019ICME/track1"}


def converter_settings(config) -> dict:
    """The converter settings a Config carries for its dataset: the converter's ``SETTINGS``,
    keys of properties/dataset/<name>.yaml, under the same names (a missing one is an error)."""
    name = config["dataset"]
    return {key: setting(config, key, f"properties/dataset/{name}.yaml") for key in CONVERTERS[name].SETTINGS}


def generator(name: str):
    """(the function writing a generated raw sample for ``name``, its generator version)."""
    if name == "tiktok":
        return synthetic_tiktok.write_tiktok_raw, synthetic_tiktok.GENERATOR_VERSION
    return synthetic_wechat.write_wechat_raw, synthetic_wechat.GENERATOR_VERSION


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
    with folder_lock(sample):  # a second run wanting the same sample waits, then uses it
        if not (converter.has_raw_files(sample) and synthetic_matches(sample, scale, seed, name)):
            log(f"no raw {name} files in {real}: generating a {scale}-scale sample (seed {seed}) in {sample}")
            generator(name)[0](sample, scale=scale, seed=seed)
        else:
            log(f"no raw {name} files in {real}: using the generated {scale} sample in {sample}")
    return sample


def check_atomic_files(config, folder: Path, name: str) -> None:
    """A bring-your-own dataset's atomic files, checked before RecBole reads them (``byo``):
    ``<name>.inter`` (required; labels 0/1 of both kinds, numeric timestamps), ``.item`` and
    ``.user`` where present."""
    separator = setting(config, "field_separator", "RecBole's properties")
    label = setting(config, "LABEL_FIELD")
    inter = folder / f"{name}.inter"
    if not inter.is_file():
        raise MissingInputError(f"{inter}: file not found (a dataset needs its interactions, {name}.inter)")
    byo.check_atomic_file(inter, label, separator, setting(config, "TIME_FIELD"))
    for suffix in ("item", "user"):
        if (folder / f"{name}.{suffix}").is_file():
            byo.check_atomic_file(folder / f"{name}.{suffix}", None, separator)


def ensure_dataset(config) -> dict | None:
    """Make ``<data_path>/<dataset>/`` ready for RecBole; returns its manifest when we built it."""
    name = config["dataset"]
    atomic_dir = Path(config["data_path"])
    if name not in CONVERTERS:
        if not atomic_dir.exists():
            raise MissingInputError(f"{atomic_dir}: no atomic dataset folder for {name!r}")
        check_atomic_files(config, atomic_dir, name)
        manifest = atomic_dir / "manifest.json"
        return json.loads(manifest.read_text()) if manifest.exists() else None
    raw_dir = raw_source(name, config["raw_root"], config["synthetic_root"],
                         str(config["synthetic_scale"]), int(config["synthetic_seed"]))
    return CONVERTERS[name].convert(raw_dir, atomic_dir, converter_settings(config))


def prepared_manifest(config) -> dict | None:
    """The manifest of data the driver prepared for this run; never generates or converts.

    A cell on a Ray worker reads the atomic folder it was given. For a converted dataset
    (wechat, tiktok) a missing manifest means the data did not arrive: an error, not a
    reason to generate a sample of its own."""
    atomic_dir = Path(config["data_path"])
    manifest = read_json_or_none(atomic_dir / "manifest.json")
    if manifest is None and config["dataset"] in CONVERTERS:
        raise MissingInputError(f"{atomic_dir}/manifest.json: the prepared {config['dataset']} data are not there "
                                f"(a cell never prepares data itself; the driver ships them)")
    if manifest is None and not atomic_dir.exists():
        raise MissingInputError(f"{atomic_dir}: no atomic dataset folder for {config['dataset']!r}")
    return manifest
