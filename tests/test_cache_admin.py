"""Listing and pruning persistent image caches (python -m egan_med.data.cache_admin) on real radiographs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from egan_med.config import DataConfig
from egan_med.data.cache import build_store, cache_files
from egan_med.data.cache_admin import main as admin_main
from egan_med.data.cache_admin import scan

from conftest import data_file, data_glob

CXR = data_glob(data_file("cxr_covid_ccby", "train"), "*/*/*.jpg", 4)
STEM = "images_0123456789ab_0123456789abcdef"  # the cache's exact naming pattern


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _npy(path: Path, shape: tuple[int, ...] = (2, 3, 8, 8)) -> None:
    """An .npy with the header the cache writes."""
    arr = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.uint8, shape=shape)
    del arr


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
    dead = _dead_pid()
    tmp_debris = cache / f"{STEM}.tmp{dead}.npy"
    _npy(tmp_debris)
    tmp_index = cache / f"{STEM}.json.tmp{dead}"
    tmp_index.write_text("{")
    orphan = cache / "images_0123456789ab_fedcba9876543210.npy"  # an .npy whose index was never written
    _npy(orphan)
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


def test_prune_touches_only_files_the_cache_wrote(tmp_path, capsys):
    cache = tmp_path / "cache"
    paths = []
    for i in range(3):
        Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(tmp_path / f"img{i}.png")
        paths.append(str(tmp_path / f"img{i}.png"))
    cfg = DataConfig(image_size=16, cache_dir=str(cache))
    build_store(paths, cfg)
    npy, index = cache_files(str(cache), cfg, paths)
    mine = {  # a user's files that only look like cache files
        "images_features.npy": None, "images_features.json": '{"note": "mine"}',  # loose names
        "images_0123456789ab_0123456789abcdef.npy": None,  # exact name, but no index and not an image array
        "images_aaaaaaaaaaaa_bbbbbbbbbbbbbbbb.npy": "shape",  # exact name and an image array, with a foreign .json
        "images_aaaaaaaaaaaa_bbbbbbbbbbbbbbbb.json": '{"shape": [9, 9]}',
        f"images_0123456789ab_0123456789abcdef.tmp{10**30}.npy": None,  # a "pid" no process can have
        f"images_0123456789ab_0123456789abcdef.json.tmp{10**30}": "{",
        "images_mine.tmp1.npy": None,
    }
    for name, content in mine.items():
        if content == "shape":
            _npy(cache / name)
        elif content is None and name.endswith(".npy"):
            np.save(cache / name, np.arange(5.0))  # the user's own array
        else:
            (cache / name).write_text(content)
    for f in os.listdir(cache):
        _age(str(cache / f), 400)
    assert admin_main([str(cache), "--unused-days", "30"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count("deleted") == 2
    assert sorted(os.listdir(cache)) == sorted(mine)  # the real cache went; every file of the user's stayed
    assert not os.path.exists(npy) and not os.path.exists(index)
