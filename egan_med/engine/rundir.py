"""Run directories: never overwrite another config's run, report unwritable or full disks up front.

A training holds an exclusive ``fcntl.flock`` on ``RUN_DIR/.egan_med.lock`` from the moment it creates the
directory until its process ends or ``release_run_dirs`` is called, so two trainings can never write one directory.
"""
from __future__ import annotations

import fcntl
import fnmatch
import os
import shutil

import pandas as pd

from egan_med.config import Config, ConfigError, read_yaml, save_config
from egan_med.io import atomic_path

MIN_FREE_BYTES = 200 * 2**20  # checkpoints of the largest backbones are ~100-200 MB


class RunDirError(RuntimeError):
    """The run directory cannot be used; the message says why and what to do."""


LOCK_NAME = ".egan_med.lock"
# What egan_med writes into a run directory (each also as NAME.tmp while being written). --force removes
# only these, so a user's own files in the folder survive.
RUN_FILES = ("config.yaml", "metrics.csv", "report.md", "report.csv", "report.json", "operating_point.json",
             "MODEL_CARD.md", "skipped_images.csv", "augmentations.png", "correct_counts.png", "losses.png",
             "roc_pr_*.png", "scores_*.npz")
# Folders egan_med writes, with what it writes inside them; "run" folders hold a nested run or evaluation.
RUN_SUBDIRS = {"checkpoints": ("*.pt", "*.pt.prev"), "tb": ("events.out.tfevents.*",),
               "export": ("scorer.ts.pt", "scorer.onnx", "discriminator.ts.pt", "discriminator.onnx", "export.json"),
               "epoch_scores": ("epoch_*.npz",), "oneclass": ("*.npz", "*.pt", "run.json"),
               "deploy": ("scorer.pt", "scores_*.npz", "deploy.json"),
               "baseline": "run", "evaluations": "runs"}
_held: dict[str, int] = {}  # realpath of a run directory -> fd of its lock file, held by this process
_fresh: list[str] = []  # run directories this process created (they did not exist before)


def _ours(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".tmp") for p in patterns)


def remove_run_files(run_dir: str) -> list[str]:
    """Delete what egan_med wrote in ``run_dir`` and nothing else (what --force replaces).

    Args:
        run_dir: a run directory (or a folder the user pointed --out at).

    Returns:
        The entries left in ``run_dir`` that egan_med did not write (kept).
    """
    def sweep(folder: str, patterns: tuple[str, ...], nested: bool) -> None:
        for entry in os.scandir(folder):
            if entry.is_dir(follow_symlinks=False):
                if nested:  # tb/ keeps hparams runs, evaluations/ one folder per operating point
                    sweep(entry.path, patterns, True)
                    _rmdir_if_empty(entry.path)
            elif _ours(entry.name, patterns):
                os.remove(entry.path)

    for entry in os.scandir(run_dir):
        if entry.is_dir(follow_symlinks=False) and entry.name in RUN_SUBDIRS:
            rule = RUN_SUBDIRS[entry.name]
            if rule == "run":
                remove_run_files(entry.path)
            elif rule == "runs":
                for sub in os.scandir(entry.path):
                    if sub.is_dir(follow_symlinks=False):
                        remove_run_files(sub.path)
                        _rmdir_if_empty(sub.path)
            else:
                sweep(entry.path, rule, nested=entry.name in ("tb", "checkpoints"))  # checkpoints/epochs/
            _rmdir_if_empty(entry.path)
        elif entry.is_file(follow_symlinks=False) and _ours(entry.name, RUN_FILES):
            os.remove(entry.path)
    return sorted(e for e in os.listdir(run_dir) if e != LOCK_NAME)


def _rmdir_if_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # not empty: it holds something egan_med did not write


def _lock_holder(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            pid = fh.read(32).strip()
        return f"pid {pid}" if pid.isdigit() else "another process"
    except OSError:
        return "another process"


def lock_run_dir(run_dir: str) -> None:
    """Take the run directory's exclusive lock for the rest of this process (idempotent).

    Raises:
        RunDirError: another process holds it (the message names its pid).
    """
    key = os.path.realpath(run_dir)
    if key in _held:
        return
    path = os.path.join(run_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(f"{run_dir} is in use by another training ({_lock_holder(path)}); wait for it to finish "
                          "or use --out NEW_DIR") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd


def release_run_dirs() -> None:
    """Release every run-directory lock this process holds (and forget which directories it created)."""
    _fresh.clear()
    while _held:
        _, fd = _held.popitem()
        os.close(fd)  # closing the descriptor drops the flock


def discard_unused_run_dirs() -> list[str]:
    """Remove the run directories this process created that still hold only the start of a run.

    A run refused after its directory was made (an unreadable image, missing weights) must leave nothing behind:
    a directory this process created and that holds nothing but ``config.yaml``, the lock and an empty
    ``checkpoints/`` is removed. Any other file in it keeps it. Releases this process's locks.

    Returns:
        The directories removed.
    """
    fresh = list(_fresh)
    release_run_dirs()
    removed = []
    for run_dir in reversed(fresh):  # nested ones (baseline/) first
        try:
            entries = set(os.listdir(run_dir))
            if not entries <= {"config.yaml", LOCK_NAME, "checkpoints"}:
                continue
            ckpt = os.path.join(run_dir, "checkpoints")
            if "checkpoints" in entries and (not os.path.isdir(ckpt) or os.listdir(ckpt)):
                continue
            for name in entries - {"checkpoints"}:
                os.remove(os.path.join(run_dir, name))
            for folder in (ckpt, run_dir):
                if os.path.isdir(folder):
                    os.rmdir(folder)
            removed.append(run_dir)
        except OSError:
            continue  # a user's file appeared, or the folder is gone: leave it as it is
    return removed


def _check_not_locked(run_dir: str) -> None:
    """Fail early, before any expensive work, when another process trains into ``run_dir``."""
    path = os.path.join(run_dir, LOCK_NAME)
    if os.path.realpath(run_dir) in _held or not os.path.isfile(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunDirError(f"{run_dir} is in use by another training ({_lock_holder(path)}); wait for it to finish "
                          "or use --out NEW_DIR") from None
    finally:
        os.close(fd)


def _existing_parent(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_run_dir(run_dir: str, cfg: Config, resume: bool | None, force: bool) -> bool:
    """Check, without writing anything, that ``run_dir`` can take this run.

    Args:
        run_dir: the directory.
        cfg: the resolved config; a directory holding another config is refused unless ``force``.
        resume: True requires a checkpoint to be there.
        force: allow replacing a directory that belongs to another config.

    Returns:
        True when egan_med's files in the directory will be removed first (``force`` over another config's run).
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunDirError(f"run directory {run_dir} is a file")
    parent = _existing_parent(run_dir)
    if not os.path.isdir(parent):
        raise RunDirError(f"cannot create run directory {run_dir}: {parent} is a file, not a folder")
    if os.path.isdir(run_dir) and os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 takes the lock
        _check_not_locked(run_dir)
    wipe = False
    force_says = ("--force deletes only the files egan_med wrote there (config, metrics, checkpoints, reports, "
                  "plots, tb/) and keeps everything else")
    config_path = os.path.join(run_dir, "config.yaml")
    if os.path.exists(config_path):
        try:
            old = read_yaml(config_path)
        except ConfigError as exc:
            old = None
            if not force:
                raise RunDirError(f"{exc}; use --out NEW_DIR, or --force to replace that run ({force_says})") from None
        if old != cfg.to_dict():
            if not force:
                raise RunDirError(f"{run_dir} holds a run of a different config; use --out NEW_DIR, or --force to "
                                  f"replace that run ({force_says})")
            wipe = True
    elif os.path.isdir(run_dir) and [e for e in os.listdir(run_dir) if e != LOCK_NAME]:
        if not force:
            raise RunDirError(f"{run_dir} is not empty and is not an egan_med run; use --out NEW_DIR, or --force to "
                              f"train into it ({force_says})")
        wipe = True
    for sub in RUN_SUBDIRS:  # a file where egan_med keeps a folder would stop the run after it started
        if os.path.lexists(os.path.join(run_dir, sub)) and not os.path.isdir(os.path.join(run_dir, sub)):
            raise RunDirError(f"{os.path.join(run_dir, sub)} is a file, where egan_med keeps its {sub}/ folder; move "
                              "it away or use --out NEW_DIR")
    has_ckpt = any(os.path.exists(os.path.join(run_dir, "checkpoints", f)) for f in ("last.pt", "last.pt.prev"))
    if resume and (wipe or not has_ckpt):
        raise RunDirError(f"--resume: {run_dir} has no checkpoint of this config to resume from")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write to {parent} (for run directory {run_dir}): permission denied")
    free = shutil.disk_usage(parent).free
    if free < MIN_FREE_BYTES:
        raise RunDirError(f"only {free // 2**20} MB free at {parent}; a run needs at least {MIN_FREE_BYTES // 2**20} MB")
    return wipe


def create_run_dir(run_dir: str, cfg: Config, wipe: bool) -> None:
    """Create ``run_dir``, lock it for this process, clear egan_med's old files when ``wipe``, record the config.

    Raises:
        RunDirError: the folder cannot be created, or another training holds it.
    """
    fresh = not os.path.exists(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    if fresh:
        _fresh.append(run_dir)
    lock_run_dir(run_dir)  # before touching anything inside: a concurrent training must not interleave
    if wipe:
        remove_run_files(run_dir)
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    save_config(cfg, os.path.join(run_dir, "config.yaml"))


def write_table_atomic(df: pd.DataFrame, path: str) -> None:
    """Write a CSV via a temporary file and rename, so readers never see half a table."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
