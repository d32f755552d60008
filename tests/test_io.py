"""egan_med.io: atomic writes leave either the old file or the new one, never half of one."""
from __future__ import annotations

import hashlib
import math
import os

import pytest

from egan_med.io import atomic_path, file_hash, fmt_bounds, fmt_interval, write_json, write_text


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "a.txt"
    write_text(str(path), "old")
    with pytest.raises(RuntimeError), atomic_path(str(path)) as tmp:
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]  # no temporary file left behind


def test_write_json_and_hash(tmp_path):
    path = tmp_path / "x.json"
    write_json(str(path), {"a": 1}, indent=2)
    assert path.read_text() == '{\n  "a": 1\n}'
    assert file_hash(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_hash(str(path), "sha1") == hashlib.sha1(path.read_bytes()).hexdigest()


def test_fmt_interval():
    assert fmt_interval(0.8412, 0.81, 0.8749) == "0.84 [0.81, 0.87]"
    assert fmt_interval(0.8412, 0.81, 0.8749, digits=3) == "0.841 [0.810, 0.875]"
    assert fmt_interval(0.8412, math.nan, 0.9) == "0.84"
    assert fmt_interval(0.5, None, None) == "0.50"
    assert fmt_interval(math.nan, 0.1, 0.2) == "n/a"
    assert fmt_interval(None) == "n/a"
    assert fmt_bounds(0.1, 0.2) == " [0.10, 0.20]" and fmt_bounds(0.1, math.nan) == ""
