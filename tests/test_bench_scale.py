"""scripts/bench_scale.py: its memory check flags a bounded stage that grows, and --quick passes on this code."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts import bench_scale

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_scale.py"


def _module():
    return bench_scale


def _row(stage, n, own_mib, wall=1.0):
    return {"stage": stage, "n": n, "wall_s": wall, "peak_anon": 2 ** 29, "own": int(own_mib * 2 ** 20), "hwm": 2 ** 30}


def test_report_flags_bounded_stages_that_grow_and_gives_the_exponent():
    m = _module()
    rows = [_row("patchcore", 100, 100, 2.0), _row("patchcore", 400, 140, 8.0),  # 1.4x: grew
            _row("scoring", 100, 100), _row("scoring", 400, 130),  # 1.3x but within 1.25x + 8 MiB
            _row("knn", 100, 10), _row("knn", 400, 40)]  # grows by design: reported, not checked
    table, grew = m.report(rows, [100, 400])
    assert grew == ["patchcore"]
    assert "| patchcore | 1.00 | 1.40x | bounded |" in table
    assert "| knn | 0.00 | 4.00x | grows with N by design |" in table


@pytest.mark.slow
def test_quick_scale_run_passes_its_memory_check():
    # The four stages the check covers (cohort and knn grow with N by design; the full --quick also runs them).
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--stages", "image_cache", "patchcore", "train_epoch",
                           "scoring"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("image_cache", "patchcore", "train_epoch", "scoring"):
        assert f"| {stage} | 2,048 |" in done.stdout


def test_the_per_image_allowance_passes_the_manifest_but_not_a_future_per_image():
    # Measured at 1,000 -> 16,000 images: the image cache with Executor.map over every row (2.2 -> 35.3 MiB own)
    # against the windowed decode (1.7 -> 15.1 MiB: the manifest's pandas rows and paths).
    m = _module()
    old = [_row("image_cache", 1000, 2.2), _row("image_cache", 16000, 35.3)]
    new = [_row("image_cache", 1000, 1.7), _row("image_cache", 16000, 15.1)]
    assert m.report(old, [1000, 16000])[1] == ["image_cache"]
    assert m.report(new, [1000, 16000])[1] == []
