"""The one writer of files: every file the project writes goes through here.

A file is written under a temporary name of its own beside the final one
(``.<name>.<pid>.<8 hex>.tmp``: two processes, or two calls, never share one) and renamed into
place only once complete, so a crash, a kill or a full disk never leaves a half-written result
that looks finished; the temporary file is removed when the write fails. Temporary files left by
a process that no longer exists (a ``kill -9``) are removed by the next writer in that folder.
A failed write raises ``OutputError`` naming the file, so the command line prints one line.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

# .<name>.<pid>.<8 hex>.tmp; also the older .<name>.<pid>.tmp
TEMPORARY = re.compile(r"^\.(?P<name>.+?)\.(?P<pid>[0-9]+)(?:\.[0-9a-f]{6,8})?\.tmp$")


def temporary_path(final) -> Path:
    """A temporary name beside ``final`` that no other process (nor another call) uses."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def move_into_place(temporary, final) -> Path:
    """Rename a complete ``temporary`` file (or a folder filled beside its final place) to
    ``final``, atomic on one file system; a failure raises ``OutputError`` naming ``final``. For
    writers that commit several files in an order of their own (the converters, the generators,
    the engine's unpacked data); returns the final path."""
    try:
        os.replace(temporary, final)
    except OSError as error:
        raise OutputError(f"{final}: could not be written ({error.strerror or error})") from None
    return Path(final)


@contextmanager
def atomic_path(final):
    """Yield a temporary path to write ``final`` through (for writers that want a path: numpy,
    torch, pyarrow); it is renamed to ``final`` when the block ends without error, removed
    otherwise. Parent folders are created."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{final.parent}: cannot create the folder ({error.strerror or error})") from None
    temporary = temporary_path(final)
    try:
        yield temporary
        move_into_place(temporary, final)
    except OSError as error:
        raise OutputError(f"{final}: could not be written ({error.strerror or error}); nothing was left "
                          f"behind under its name") from None
    finally:
        if temporary.exists():
            temporary.unlink()


def write_bytes(final, payload: bytes) -> Path:
    """Write ``payload`` to ``final`` atomically; returns the final path."""
    with atomic_path(final) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(final)


def write_text(final, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``final`` atomically; returns the final path."""
    return write_bytes(final, text.encode("utf-8"))


def try_lock(path):
    """Take an exclusive ``flock`` on ``path`` (created if missing) without waiting: returns (the
    open handle, None) when this process now holds it, with its pid written into the file, or
    (None, the holder's pid as the file says it, '?' when unreadable) when another process holds
    it. The lock lasts while the handle is open; the kernel releases it when the holder ends, so
    a killed holder never leaves it taken. The file is written in place, not renamed: the lock
    belongs to the file, and a new file would be a new lock."""
    import fcntl

    path = Path(path)
    try:
        handle = open(path, "a+", encoding="utf-8")
    except OSError as error:
        raise OutputError(f"{path}: cannot open the lock file ({error.strerror or error})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        return None, holder
    except OSError as error:           # a file system without locks
        handle.close()
        raise OutputError(f"{path}: cannot be locked ({error.strerror or error})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle, None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (someone else's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temporaries(folder, log=None) -> list[str]:
    """Remove ``.<name>.<pid>[.<random>].tmp`` files whose process is gone; returns their names.
    A live process's files (this one's included) are left alone: it may still be writing them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = TEMPORARY.match(path.name)
        if match and int(match["pid"]) != os.getpid() and not pid_alive(int(match["pid"])):
            try:
                path.unlink()
                removed.append(path.name)
            except FileNotFoundError:
                pass
    if removed:
        message = f"removed {len(removed)} temporary file(s) of stopped processes in {folder}: {', '.join(sorted(removed))}"
        (log or (lambda text: print(text, file=sys.stderr, flush=True)))(message)
    return removed
