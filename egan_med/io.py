"""Small file helpers written once: atomic writes, file hashes, "value [lo, hi]" formatting.

Imports no torch, so the cohort builder can use it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str, fsync: bool = False, tmp: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    Readers never see half a file: on any error the temporary file is removed and ``path`` is untouched.

    Args:
        path: destination file.
        fsync: flush the file to disk before the rename (checkpoints: survive a power cut).
        tmp: the temporary name; default ``path + ".tmp"``, the name run-directory cleanup (rundir.RUN_FILES)
            and cache_admin recognise as egan_med's own.

    Yields:
        The temporary path to write.
    """
    tmp = f"{path}.tmp" if tmp is None else tmp
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> None:
    """Write ``obj`` as JSON (``json.dumps`` keyword arguments pass through) to ``path`` atomically."""
    write_text(path, json.dumps(obj, **dump_kwargs))


def file_hash(path: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks (hashlib.file_digest)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def first_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's message cut to its first line and ``limit`` characters, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_bounds(lo: Any, hi: Any, digits: int = 2) -> str:
    """``" [0.81, 0.87]"``, or ``""`` when either bound is missing (None or NaN)."""
    return "" if _missing(lo) or _missing(hi) else f" [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_interval(value: Any, lo: Any = None, hi: Any = None, digits: int = 2) -> str:
    """``"0.84 [0.81, 0.87]"``; just the value when either bound is missing; ``"n/a"`` when the value is.

    Args:
        value: the point estimate (None or NaN means not available).
        lo: lower bound (None or NaN: no interval).
        hi: upper bound (None or NaN: no interval).
        digits: decimals shown.

    Returns:
        The formatted text.
    """
    if _missing(value):
        return "n/a"
    return f"{value:.{digits}f}" + fmt_bounds(lo, hi, digits)


def load_restricted(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, without torch's pickle-protocol ``UserWarning``.

    The restricted unpickler warns (two lines) about any pickle protocol other than 2 before it either reads the
    file or refuses it; callers report the refusal themselves in one line, so the warning is only noise.

    Args:
        path: a file written by ``torch.save`` (or any pickle; anything beyond tensors and plain data is refused).

    Returns:
        What the file holds.
    """
    import warnings

    import torch  # here, not at the top: the cohort builder imports this module and must not pull in torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)
