"""Shared fixtures: generated raw WeChat files and their atomic conversion, made once per session."""

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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


def copy_atomic(source: Path, root: Path, name: str) -> Path:
    """Copy an atomic wechat folder to ``root/name`` with files renamed to ``name.*``."""
    target = root / name
    target.mkdir(parents=True, exist_ok=True)
    for suffix in ("inter", "item", "mm.npz"):
        shutil.copy(source / f"wechat.{suffix}", target / f"{name}.{suffix}")
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
