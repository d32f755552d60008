"""Run directories: never overwrite another config's run, report unwritable or full disks up front."""
from __future__ import annotations

import os
import shutil

import pandas as pd
import yaml

from egan_med.config import Config, save_config
from egan_med.io import atomic_path

MIN_FREE_BYTES = 200 * 2**20  # checkpoints of the largest backbones are ~100-200 MB


class RunDirError(RuntimeError):
    """The run directory cannot be used; the message says why and what to do."""


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
        True when the directory will be wiped (``force`` over another config's run).
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunDirError(f"run directory {run_dir} is a file")
    wipe = False
    config_path = os.path.join(run_dir, "config.yaml")
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as fh:
            old = yaml.safe_load(fh)
        if old != cfg.to_dict():
            if not force:
                raise RunDirError(f"{run_dir} holds a run of a different config; use --force to replace it or --out NEW_DIR")
            wipe = True
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        if not force:
            raise RunDirError(f"{run_dir} is not empty and is not an egan_med run; use --force or --out NEW_DIR")
        wipe = True
    has_ckpt = any(os.path.exists(os.path.join(run_dir, "checkpoints", f)) for f in ("last.pt", "last.pt.prev"))
    if resume and (wipe or not has_ckpt):
        raise RunDirError(f"--resume: {run_dir} has no checkpoint of this config to resume from")
    parent = _existing_parent(run_dir)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write to {parent} (for run directory {run_dir}): permission denied")
    free = shutil.disk_usage(parent).free
    if free < MIN_FREE_BYTES:
        raise RunDirError(f"only {free // 2**20} MB free at {parent}; a run needs at least {MIN_FREE_BYTES // 2**20} MB")
    return wipe


def create_run_dir(run_dir: str, cfg: Config, wipe: bool) -> None:
    """Create (or wipe and re-create) ``run_dir`` and record the config in it."""
    if wipe:
        shutil.rmtree(run_dir)
    try:
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    save_config(cfg, os.path.join(run_dir, "config.yaml"))


def write_table_atomic(df: pd.DataFrame, path: str) -> None:
    """Write a CSV via a temporary file and rename, so readers never see half a table."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
