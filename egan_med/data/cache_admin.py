"""List and prune the persistent image caches that ``data.cache_dir`` accumulates.

    python -m egan_med.data.cache_admin DIR                         # what is there, newest use first
    python -m egan_med.data.cache_admin DIR --unused-days 30        # delete caches not used for 30 days
    python -m egan_med.data.cache_admin DIR --unused-days 30 --dry-run

Each cache is one ``images_<preprocess>_<manifest>.npy`` plus its ``.json`` index; a new image size, kind or
cohort makes a new pair and nothing deletes the old one, and at 224 px a CheXpert-sized cache is ~25 GB.
Reusing a cache touches its index, so "last used" is the index's mtime. Pruning also removes the debris of
builds that were killed (``.tmp<pid>`` files of processes that no longer run, and an .npy without its index).
Process ids are this machine's: on a cache folder shared between machines, run it where the builds run.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import sys
import time
from dataclasses import dataclass

# What cache._write leaves while building: images_K_M.tmp<pid>.npy and images_K_M.json.tmp<pid>.
TMP = re.compile(r"^images_\w+(?:\.json)?\.tmp(\d+)(?:\.npy)?$")


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
    except PermissionError:
        return True
    return True


def scan(cache_dir: str) -> list[CacheEntry]:
    """Every cache and every piece of debris in ``cache_dir``, most recently used first."""
    entries = []
    for npy in glob.glob(os.path.join(cache_dir, "images_*.npy")):
        if TMP.match(os.path.basename(npy)):
            continue
        index = npy[:-4] + ".json"
        if not os.path.isfile(index):
            if time.time() - os.path.getmtime(npy) < 3600:
                continue  # a build writes its index a moment after the .npy: leave a fresh one alone
            entries.append(CacheEntry([npy], os.path.getsize(npy), os.path.getmtime(npy), None, None,
                                      "no index: its build never finished"))
            continue
        try:
            with open(index, encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            meta = {}
        entries.append(CacheEntry([npy, index], os.path.getsize(npy) + os.path.getsize(index), os.path.getmtime(index),
                                  meta.get("count"), meta.get("preprocess")))
    for path in glob.glob(os.path.join(cache_dir, "images_*.tmp*")):
        m = TMP.match(os.path.basename(path))
        if m and not _pid_alive(int(m.group(1))):
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m egan_med.data.cache_admin", description=__doc__.splitlines()[0])
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
