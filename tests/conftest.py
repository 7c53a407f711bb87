"""Shared fixtures: generated raw WeChat files and their atomic conversion, made once per session."""

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def own_home(tmp_path_factory):
    """Every test (and every command it starts) runs with a HOME of its own: Ray's local cluster
    writes its authentication token to ~/.ray/auth_token, and once that file exists every
    `ray start --head` of the machine's user requires it. pip keeps the user's cache."""
    import os

    real = Path.home()
    saved = {name: os.environ.get(name) for name in ("HOME", "PIP_CACHE_DIR")}
    os.environ.setdefault("PIP_CACHE_DIR", str(real / ".cache" / "pip"))
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory):
    """A tiny WeChat-format raw folder (200 users, 30 k actions) from the seeded generator."""
    from recbole_mma4ctr.prepare.synthetic.wechat import write_wechat_raw

    out = tmp_path_factory.mktemp("raw") / "wechat"
    write_wechat_raw(out, scale="tiny", seed=7)
    return out


@pytest.fixture(scope="session")
def tiny_atomic(tiny_raw, tmp_path_factory):
    """The tiny raw files converted to atomic files (no user filter, so every user stays)."""
    from recbole_mma4ctr.prepare.wechat import convert

    out = tmp_path_factory.mktemp("atomic") / "wechat"
    manifest = convert(tiny_raw, out, {"min_user_actions": 0})
    return out, manifest


def copy_atomic(source: Path, root: Path, name: str, manifest: bool = False) -> Path:
    """Copy an atomic wechat folder to ``root/name`` with files renamed to ``name.*``; with
    ``manifest``, the source's manifest rewritten to describe the copy (its name and files)."""
    import json

    target = root / name
    target.mkdir(parents=True, exist_ok=True)
    suffixes = ("inter", "item", "mm.npz")
    for suffix in suffixes:
        shutil.copy(source / f"wechat.{suffix}", target / f"{name}.{suffix}")
    if manifest:
        described = json.loads((source / "manifest.json").read_text())
        digests = {f"{name}.{suffix}": described["file_digests"][f"wechat.{suffix}"] for suffix in suffixes}
        described.update(dataset=name, files=sorted(digests), file_digests=digests)
        (target / "manifest.json").write_text(json.dumps(described))
    return target


def run_settings(tmp_path: Path, **extra) -> dict:
    """Overrides that keep a run's outputs inside ``tmp_path``."""
    settings = {
        "results_dir": str(tmp_path / "results"),
        "checkpoint_dir": str(tmp_path / "saved"),
        "show_progress": "False",
        "log_wandb": "False",
    }
    settings.update({k: str(v) for k, v in extra.items()})
    return settings


def remove_ray_temp(folder: Path):
    """Pytest's folders are too deep for Ray's sockets, so <folder>/rt links to /tmp/rmc-<hash>
    (engine.ray_temp_dir), or the folder itself is a short /tmp one: remove what Ray left there."""
    import time

    link = Path(folder) / "rt"
    target = link.resolve() if link.is_symlink() else Path(folder) if Path(folder).name.startswith("rmc-") else None
    if target is None:
        return
    for _ in range(5):      # Ray's helper processes may still be writing their last logs
        shutil.rmtree(target, ignore_errors=True)
        if not target.exists():
            break
        time.sleep(1)
