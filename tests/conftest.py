"""Shared fixtures: the real data folder CI also has at ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Two cores: more threads than that only thrash.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"real test data expected at {SHARED_DATA}"
    return SHARED_DATA
