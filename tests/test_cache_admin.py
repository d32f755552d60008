"""Listing and pruning persistent image caches (python -m egan_med.data.cache_admin) on real radiographs."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from egan_med.config import DataConfig
from egan_med.data.cache import build_store, cache_files
from egan_med.data.cache_admin import main as admin_main
from egan_med.data.cache_admin import scan

from conftest import data_file, data_glob

CXR = data_glob(data_file("cxr_covid_ccby", "train"), "*/*/*.jpg", 4)
DEAD_PID = 4_194_304 + 17  # above Linux's pid_max: never a running process


def _age(path: str, days: float) -> None:
    t = time.time() - days * 86400
    os.utime(path, (t, t))


def test_reuse_marks_use_and_prune_keeps_recent_deletes_old_and_debris(tmp_path, capsys):
    paths = []
    for i, src in enumerate(CXR[:4]):
        shutil.copy(src, tmp_path / f"img{i}.jpg")
        paths.append(str(tmp_path / f"img{i}.jpg"))
    cache = tmp_path / "cache"
    old_cfg, new_cfg = DataConfig(image_size=32, cache_dir=str(cache)), DataConfig(image_size=48, cache_dir=str(cache))
    assert build_store(paths, old_cfg).built and build_store(paths, new_cfg).built
    old_npy, old_index = cache_files(str(cache), old_cfg, paths)
    new_npy, new_index = cache_files(str(cache), new_cfg, paths)

    _age(new_index, 90)  # reusing a cache must make it "recently used" again
    assert not build_store(paths, new_cfg).built
    assert time.time() - os.path.getmtime(new_index) < 600
    _age(old_index, 40)
    tmp_debris = cache / f"images_abc_def.tmp{DEAD_PID}.npy"
    tmp_debris.write_bytes(b"half a cache")
    tmp_index = cache / f"images_abc_def.json.tmp{DEAD_PID}"
    tmp_index.write_text("{")
    orphan = cache / "images_0123_4567.npy"  # an .npy whose index was never written
    orphan.write_bytes(b"x" * 100)
    _age(str(orphan), 2)

    entries = scan(str(cache))
    assert [e.images for e in entries if not e.debris] == [4, 4]
    assert sorted(os.path.basename(e.files[0]) for e in entries if e.debris) == sorted([tmp_debris.name, tmp_index.name, orphan.name])

    assert admin_main([str(cache)]) == 0  # listing alone deletes nothing
    assert "would delete" not in capsys.readouterr().out and len(os.listdir(cache)) == 7
    assert admin_main([str(cache), "--unused-days", "30", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would delete") == 5 and "image_size=32" in out
    assert all(os.path.exists(p) for p in (old_npy, old_index, tmp_debris, tmp_index, orphan))

    assert admin_main([str(cache), "--unused-days", "30"]) == 0
    assert sorted(os.listdir(cache)) == sorted([os.path.basename(new_npy), os.path.basename(new_index)])
    assert not build_store(paths, new_cfg).built  # what was kept still works


def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys):
    assert admin_main([str(tmp_path / "nope")]) == 2
    assert admin_main([str(tmp_path), "--unused-days", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: cache folder not found: {tmp_path / 'nope'}", "error: --unused-days must be >= 0, got -1.0"]
