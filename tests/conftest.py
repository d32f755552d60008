"""Shared fixtures: the small real images and label tables committed under tests/data (see its README.md)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
BUNDLED_NPZ = REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz"

# Two cores: more threads than that only thrash.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def data_file(*parts: str) -> Path:
    """A committed fixture file or folder; raises at once (also at import time) if it is missing.

    Args:
        *parts: path components under tests/data.

    Returns:
        The path, known to exist.
    """
    path = DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"test fixture missing: {path} (it is committed under tests/data; is the clone complete?)")
    return path


def data_glob(folder: Path, pattern: str, minimum: int) -> list[Path]:
    """Sorted matches of ``pattern`` under ``folder``, failing loudly when fewer than ``minimum`` exist.

    Args:
        folder: where to glob.
        pattern: a glob pattern relative to ``folder``.
        minimum: how many files the caller needs.

    Returns:
        The sorted matching paths.
    """
    found = sorted(folder.glob(pattern))
    if len(found) < minimum:
        raise FileNotFoundError(f"test fixtures: {folder}/{pattern} matched {len(found)} files, need {minimum}")
    return found


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The committed fixture root (tests/data)."""
    assert DATA.is_dir(), f"test fixtures expected at {DATA}"
    return DATA


@pytest.fixture(scope="session")
def shared_data(data_root: Path) -> Path:
    """Old name of ``data_root`` (it once pointed outside the repository), kept so older tests still run."""
    return data_root


NPZ = REPO / "egan_med" / "bundled" / "pneumoniamnist_28.npz"


def build_tiny_cohort(out: Path, train: tuple[int, int], val: tuple[int, int], test: tuple[int, int]) -> str:
    """A small cohort of the bundled PneumoniaMNIST (pneumonia = minority), built by the user's own command.

    Args:
        out: cohort folder to write.
        train, val, test: (minority, majority) image counts of each split.

    Returns:
        The cohort.csv path.
    """
    import subprocess
    import sys

    sizes = [f"--{split}-{cls}={n}" for split, pair in (("train", train), ("val", val), ("test", test))
             for cls, n in zip(("minority", "majority"), pair)]
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_cohort.py"), "--medmnist", str(NPZ),
                    "--minority", "1", *sizes, "--out", str(out)], check=True, capture_output=True)
    return str(out / "cohort.csv")

