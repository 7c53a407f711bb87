"""Find the raw files for a dataset name, or generate a sample, and convert them if needed.

For each converted dataset (``CONVERTERS``): the real files in ``<raw_root>/<RAW_FOLDERS[name]>/``
when present (``wechat/``; ``TikTok2019ICME/track1/`` for ``tiktok``, the paper's tree, whose
folder name differs from the dataset name); otherwise a generated sample in
``<synthetic_root>/<name>/`` (written once, seeded, same formats, with ``SYNTHETIC.json`` saying
what it is; regenerated when its scale, seed or generator version differ from the config). The
atomic files land in ``<data_path>/<name>/`` and are rebuilt only when the inputs or settings
change (manifest fingerprint), or when a file no longer matches the size and sha256 its manifest
records (truncated or edited by hand).

The project writes only into a folder it converted (its manifest is there) or a new, empty one.
A ``<data_path>/<name>/`` holding files but no manifest is the user's own data, for a converted
name (``wechat``) too: it is read as it is, like any other name, never converted into. Such a
bring-your-own folder's files are checked first (``byo``: encoding, field counts, labels) so
RecBole never trains on a malformed one; a manifest found in it must describe it.

``data_digests`` names the content a run reads (every file of the dataset, the modality archive
wherever ``mm_file`` puts it, the manifest's day blocks): the data part of a result's identity.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import InputError, MissingInputError
from ..settings import setting
from . import byo, tiktok, wechat
from .atomic import folder_lock, folder_owner, log, MANIFEST, manifest_problem, read_json_or_none, read_manifest
from .digests import file_digests
from .synthetic import tiktok as synthetic_tiktok, wechat as synthetic_wechat

CONVERTERS = {"wechat": wechat, "tiktok": tiktok}
RAW_FOLDERS = {"wechat": "wechat", "tiktok": "TikTok2019ICME/track1"}
# Where a converted dataset's raw input comes from: the real files, or which generated sample.
SOURCE_SETTINGS = ("raw_root", "synthetic_root", "synthetic_scale", "synthetic_seed")


def data_settings() -> frozenset:
    """Every setting that decides the data a run reads, read from their owners: the folder
    (``dataset``, ``data_path``), the raw source (``SOURCE_SETTINGS``), each converter's
    ``SETTINGS`` and the bring-your-own check's (``byo.SETTINGS``). A command that prepares the
    data once for many runs (``--tune``) must not let a run change one of them."""
    converters = [key for module in CONVERTERS.values() for key in module.SETTINGS]
    return frozenset(("dataset", "data_path", *SOURCE_SETTINGS, *converters, *byo.SETTINGS))


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
    separator, label, time_field = (setting(config, key, "properties/overall.yaml (or RecBole's own defaults)")
                                    for key in byo.SETTINGS)
    inter = folder / f"{name}.inter"
    if not inter.is_file():
        raise MissingInputError(f"{inter}: file not found (a dataset needs its interactions, {name}.inter)")
    byo.check_atomic_file(inter, label, separator, time_field)
    for suffix in ("item", "user"):
        if (folder / f"{name}.{suffix}").is_file():
            byo.check_atomic_file(folder / f"{name}.{suffix}", None, separator)


def ensure_dataset(config) -> dict | None:
    """Make ``<data_path>/<dataset>/`` ready for RecBole; returns its manifest (None for a folder
    of the user's own files without one). A converted folder whose files no longer match its
    manifest is converted again; a manifest that does not describe its folder stops the run."""
    name = config["dataset"]
    atomic_dir = Path(config["data_path"])
    cache = setting(config, "digest_cache")
    if name in CONVERTERS and folder_owner(atomic_dir) != "user":
        raw_dir = raw_source(name, config["raw_root"], config["synthetic_root"],
                             str(config["synthetic_scale"]), int(config["synthetic_seed"]))
        converter = CONVERTERS[name]
        manifest = converter.convert(raw_dir, atomic_dir, converter_settings(config))
        problem = manifest_problem(atomic_dir, manifest, name, cache)
        if problem is not None:
            log(f"{problem}: converting {raw_dir} again")
            manifest = converter.convert(raw_dir, atomic_dir, converter_settings(config), force=True)
            problem = manifest_problem(atomic_dir, manifest, name, cache)
        if problem is not None:
            raise InputError(problem)
        return manifest
    if not atomic_dir.exists():
        raise MissingInputError(f"{atomic_dir}: no atomic dataset folder for {name!r}")
    if name in CONVERTERS:
        log(f"{atomic_dir} holds your own {name} files and no {MANIFEST}: reading them as they are (the project "
            f"converts only into a folder of its own; nothing is written here)")
    check_atomic_files(config, atomic_dir, name)
    manifest = read_manifest(atomic_dir)
    problem = manifest and manifest_problem(atomic_dir, manifest, name, cache)
    if problem:
        raise InputError(f"{problem}; a bring-your-own folder's {MANIFEST} must describe it (or be removed)")
    return manifest


def prepared_manifest(config) -> dict | None:
    """The manifest of data the driver prepared for this run; never generates or converts.

    A cell on a Ray worker reads the atomic folder it was given. For a converted dataset
    (wechat, tiktok) a missing manifest means the data did not arrive: an error, not a
    reason to generate a sample of its own. A manifest that does not describe the folder (its
    dataset, its files and their sizes; the driver compared the digests) is an error too."""
    atomic_dir = Path(config["data_path"])
    manifest = read_manifest(atomic_dir)
    if manifest is None and config["dataset"] in CONVERTERS and folder_owner(atomic_dir) != "user":
        raise MissingInputError(f"{atomic_dir}/{MANIFEST}: the prepared {config['dataset']} data are not there "
                                f"(a cell never prepares data itself; the driver ships them)")
    if manifest is None and not atomic_dir.exists():
        raise MissingInputError(f"{atomic_dir}: no atomic dataset folder for {config['dataset']!r}")
    problem = manifest and manifest_problem(atomic_dir, manifest, config["dataset"])
    if problem:
        raise InputError(problem)
    return manifest


# the manifest's entries a run reads (the day split's blocks); the rest describes the conversion
MANIFEST_DATA = ("rows_by_day",)


def data_digests(config) -> dict[str, str]:
    """The sha256 of everything the run reads from its data folder, by name: every visible file
    of the dataset (``<name>.*``: atomic files, modality archive, benchmark and feature files),
    the archive ``mm_file`` names when it is another file (as ``mm_file``, wherever it is), and
    the manifest's ``MANIFEST_DATA`` (as ``manifest:<entry>``). Cached (``digests``); names, not
    paths, so the same content in another folder has the same digests."""
    name = config["dataset"]
    folder = Path(config["data_path"])
    files = {path.name: path for path in sorted(folder.iterdir())
             if path.name.startswith(f"{name}.") and path.is_file()} if folder.is_dir() else {}
    chosen = setting(config, "mm_file")
    if chosen:
        path = Path(chosen) if os.path.isabs(chosen) else folder / chosen
        if path.is_file() and path.resolve() not in {p.resolve() for p in files.values()}:
            files["mm_file"] = path
    found = file_digests(list(files.values()), setting(config, "digest_cache"))
    digests = {label: found[str(path)] for label, path in files.items()}
    manifest = read_manifest(folder) if folder.is_dir() else None
    for entry in MANIFEST_DATA:
        if manifest and manifest.get(entry) is not None:
            text = json.dumps(manifest[entry], sort_keys=True)
            digests[f"manifest:{entry}"] = hashlib.sha256(text.encode()).hexdigest()
    return digests
