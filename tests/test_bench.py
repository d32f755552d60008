"""The benchmarks keep working: scripts/bench.py --quick's table and scripts/gpu_bench.py on CPU at a toy size."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_quick_table_has_every_row(shared_data):
    bench = _load("bench")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a smoke run: one thread cannot stall on cores shared with other jobs
    try:
        line, rows = bench.collect(quick=True, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert "torch" in line and "cpu" in line
    names = [r.name for r in rows]
    for prefix in ("eGAN training, train.py", "eGAN training, first full epoch", "Scoring", "Cohort build",
                   "Loader, eval chain", "Loader, train chain"):
        assert sum(n.startswith(prefix) for n in names) == 1, (prefix, names)
    for r in rows:
        for v in (r.ours, r.reference, r.speedup):
            assert math.isfinite(v) and v > 0, r
    table = bench.format_table(line, rows)
    assert table.count("\n| ") == len(rows) + 1  # header + one line per row


def test_gpu_bench_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_bench.py"), "--device", "cpu", "--size", "32",
                    "--batch", "8", "--minority", "2", "--pool", "8", "--score-batch", "8", "--steps", "2",
                    "--warmup", "1", "--out", str(out)], check=True, capture_output=True, cwd=REPO, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads(out.read_text())
    values = [result["ceiling_densenet121_fwd_bwd_images_per_s"], *result["scoring"].values()]
    for variant in ("naive", "feature_cache", "feature_cache+minority_trunk"):
        step = result["egan_step"][variant]
        values += [step["train_images_per_s"], step["percent_of_ceiling"]]
    values += [result["egan_step"]["feature_cache"]["cache_build_images_per_s"]]
    assert all(math.isfinite(v) and v > 0 for v in values), result
