"""Run directories: never overwrite another config's run, report unwritable or full disks up front."""
from __future__ import annotations

import os
import shutil

import pandas as pd
import yaml

from egan_med.config import Config, save_config

MIN_FREE_BYTES = 200 * 2**20  # checkpoints of the largest backbones are ~100-200 MB


class RunDirError(RuntimeError):
    """The run directory cannot be used; the message says why and what to do."""


def prepare_run_dir(run_dir: str, cfg: Config, resume: bool | None, force: bool) -> None:
    """Create or reuse ``run_dir`` for ``cfg``.

    Args:
        run_dir: the directory.
        cfg: the resolved config; a directory holding another config is refused unless ``force``.
        resume: True requires a checkpoint to be there.
        force: wipe a directory that belongs to another config.
    """
    config_path = os.path.join(run_dir, "config.yaml")
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as fh:
            old = yaml.safe_load(fh)
        if old != cfg.to_dict():
            if not force:
                raise RunDirError(f"{run_dir} holds a run of a different config; use --force to replace it or --out NEW_DIR")
            shutil.rmtree(run_dir)
    elif os.path.isdir(run_dir) and os.listdir(run_dir) and force:
        shutil.rmtree(run_dir)
    has_ckpt = any(os.path.exists(os.path.join(run_dir, "checkpoints", f)) for f in ("last.pt", "last.pt.prev"))
    if resume and not has_ckpt:
        raise RunDirError(f"--resume: {run_dir} has no checkpoint to resume from")
    try:
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        probe = os.path.join(run_dir, ".write_test")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise RunDirError(f"cannot write to run directory {run_dir}: {exc.strerror}") from None
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise RunDirError(f"only {free // 2**20} MB free at {run_dir}; need at least {MIN_FREE_BYTES // 2**20} MB")
    save_config(cfg, config_path)


def write_table_atomic(df: pd.DataFrame, path: str) -> None:
    """Write a CSV via a temporary file and rename, so readers never see half a table."""
    tmp = f"{path}.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
