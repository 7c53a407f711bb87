"""Content digests (sha256) of data files, cached so that a large folder is hashed once.

A result's identity names the content it ran on, not the file names: two folders holding the
same files give the same digests, and an edit in place gives new ones. Hashing a 300 MB folder
takes about a second, so each digest is kept in a small JSON file (the ``digest_cache`` setting,
in a folder the project owns) under the file's real path together with its size, modification
time, status-change time, device and inode; a file whose five values are unchanged is not read
again. An edit in place changes the modification and status-change times (the latter cannot be
set back by hand), a replaced file has a new inode, so a stale digest is never reused.

The cache is only a cache: an unreadable one is ignored (and rewritten), two processes updating
it at once lose at most each other's new entries (it is written through ``files.write_text``:
temporary name, then rename), and entries of files that no longer exist are dropped on write.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..files import write_text

CHUNK = 1 << 22


def sha256_of(path) -> str:
    """The sha256 (hex) of a file's bytes, read in 4 MB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _stamp(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_dev, stat.st_ino]


def _read_cache(cache_file: Path) -> dict:
    try:
        loaded = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def file_digests(paths, cache_file) -> dict[str, str]:
    """``{str(path): sha256}`` for each of ``paths``, from the cache where a file is unchanged."""
    cache_file = Path(cache_file)
    cache = _read_cache(cache_file)
    found, changed = {}, False
    for path in paths:
        real = os.path.realpath(path)
        stamp = _stamp(os.stat(real))
        entry = cache.get(real)
        if not (isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str)):
            entry = {"stamp": stamp, "sha256": sha256_of(real)}
            if _stamp(os.stat(real)) == stamp:     # not written to while it was read
                cache[real] = entry
                changed = True
        found[str(path)] = entry["sha256"]
    if changed:
        kept = {name: entry for name, entry in cache.items() if os.path.exists(name)}
        write_text(cache_file, json.dumps(kept, indent=0, sort_keys=True))
    return found
