"""List and prune the persistent image caches that ``data.cache_dir`` accumulates.

    python -m egan_med.data.cache_admin DIR                         # what is there, newest use first
    python -m egan_med.data.cache_admin DIR --unused-days 30        # delete caches not used for 30 days
    python -m egan_med.data.cache_admin DIR --unused-days 30 --dry-run

Each cache is one ``images_<preprocess>_<manifest>.npy`` plus its ``.json`` index; a new image size, kind or
cohort makes a new pair and nothing deletes the old one, and at 224 px a CheXpert-sized cache is ~25 GB.
Reusing a cache touches its index, so "last used" is the index's mtime. Pruning also removes the debris of
builds that were killed (``.tmp<pid>`` files of processes that no longer run, and an .npy without its index).
Only files the cache wrote are touched: exact cache names, an .npy header the cache writes, and for a complete
cache an index that matches its .npy; a user's own .npy or .json beside them is left alone.
Process ids are this machine's: on a cache folder shared between machines, run it where the builds run.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import sys
import time
from dataclasses import dataclass

import numpy as np

from egan_med.cli import ArgumentParser, boundary

# Names cache.cache_files() and cache._write() give, exactly: images_<12 hex>_<16 hex>.npy and .json, and while
# building images_<...>.tmp<pid>.npy and images_<...>.json.tmp<pid>. Anything else is the user's and never touched.
STEM = r"images_[0-9a-f]{12}_[0-9a-f]{16}"
CACHE = re.compile(rf"^{STEM}\.npy$")
TMP = re.compile(rf"^{STEM}(?:\.json)?\.tmp(\d+)(?:\.npy)?$")
INDEX_KEYS = {"shape", "preprocess", "count", "failures", "created"}  # what cache._write puts in an index
MAX_PID = 2**22  # Linux's highest possible pid_max: a larger "pid" was not written by a build on this machine


@dataclass
class CacheEntry:
    """One cache (or one piece of debris) in a cache folder."""

    files: list[str]
    bytes: int
    last_used: float  # seconds since the epoch
    images: int | None  # None for debris
    preprocess: dict | None
    debris: str = ""  # why it is debris ("" for a complete cache)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's process / not a pid: do not call it dead
        return True
    return True


def _npy_shape(path: str) -> tuple[int, ...] | None:
    """Shape of an .npy the cache could have written (4-D (N, C, S, S) unsigned ints), else None."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)  # the header only, not the data
    except (OSError, ValueError, EOFError):
        return None
    ok = len(shape) == 4 and shape[1] in (1, 3) and shape[2] == shape[3] and not fortran and dtype.kind == "u"
    return tuple(shape) if ok else None


def _index(path: str) -> dict | None:
    """The cache's index at `path`, or None when the file is not one cache._write wrote."""
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and INDEX_KEYS <= set(meta) else None


def scan(cache_dir: str) -> list[CacheEntry]:
    """Every cache and every piece of debris in ``cache_dir``, most recently used first.

    Only files the cache provably wrote are listed: its exact names, and for a complete cache an index whose
    shape is the .npy's. A user's own files, whatever their names, are never entries (so never deleted).
    """
    entries = []
    for npy in glob.glob(os.path.join(cache_dir, "images_*.npy")):
        if not CACHE.match(os.path.basename(npy)) or (shape := _npy_shape(npy)) is None:
            continue
        index = npy[:-4] + ".json"
        if not os.path.isfile(index):
            if time.time() - os.path.getmtime(npy) < 3600:
                continue  # a build writes its index a moment after the .npy: leave a fresh one alone
            entries.append(CacheEntry([npy], os.path.getsize(npy), os.path.getmtime(npy), None, None,
                                      "no index: its build never finished"))
            continue
        meta = _index(index)
        if meta is None or tuple(meta["shape"]) != shape:
            continue  # not an index the cache wrote for this .npy
        entries.append(CacheEntry([npy, index], os.path.getsize(npy) + os.path.getsize(index), os.path.getmtime(index),
                                  meta.get("count"), meta.get("preprocess")))
    for path in glob.glob(os.path.join(cache_dir, "images_*.tmp*")):
        m = TMP.match(os.path.basename(path))
        if not m or int(m.group(1)) > MAX_PID or (path.endswith(".npy") and _npy_shape(path) is None):
            continue
        if not _pid_alive(int(m.group(1))):
            entries.append(CacheEntry([path], os.path.getsize(path), os.path.getmtime(path), None, None,
                                      f"left by process {m.group(1)}, which no longer runs"))
    return sorted(entries, key=lambda e: -e.last_used)


def prune(entries: list[CacheEntry], unused_days: float | None, now: float | None = None) -> list[CacheEntry]:
    """The entries to delete: all debris, and caches unused for more than ``unused_days`` (None: keep caches)."""
    now = time.time() if now is None else now
    return [e for e in entries if e.debris or (unused_days is not None and now - e.last_used > unused_days * 86400)]


def _describe(e: CacheEntry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
    what = e.debris or (f"{e.images} images, " + ", ".join(f"{k}={v}" for k, v in sorted((e.preprocess or {}).items())))
    return f"{e.bytes / 2**20:10.1f} MiB  last used {when}  {os.path.basename(e.files[0])}  ({what})"


@boundary("cleaning the cache")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m egan_med.data.cache_admin", description=__doc__.splitlines()[0])
    p.add_argument("cache_dir", help="the folder named by data.cache_dir")
    p.add_argument("--unused-days", type=float,
                   help="delete caches whose last use is older than this many days, and the debris of killed builds")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    a = p.parse_args(argv)
    if not os.path.isdir(a.cache_dir):
        print(f"error: cache folder not found: {a.cache_dir}", file=sys.stderr)
        return 2
    if a.unused_days is not None and not a.unused_days >= 0:
        print(f"error: --unused-days must be >= 0, got {a.unused_days}", file=sys.stderr)
        return 2
    entries = scan(a.cache_dir)
    for e in entries:
        print(_describe(e))
    print(f"{len(entries)} entries, {sum(e.bytes for e in entries) / 2**30:.2f} GiB in {a.cache_dir}")
    doomed = prune(entries, a.unused_days) if a.unused_days is not None else []  # listing alone deletes nothing
    for e in doomed:
        for f in e.files:
            if not a.dry_run:
                with contextlib.suppress(FileNotFoundError):  # another prune got there first
                    os.remove(f)
            print(f"{'would delete' if a.dry_run else 'deleted'} {f}")
    if doomed:
        print(f"{'would free' if a.dry_run else 'freed'} {sum(e.bytes for e in doomed) / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
