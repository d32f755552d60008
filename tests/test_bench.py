"""The benchmarks keep working: scripts/bench.py --quick's table and scripts/gpu_bench.py on CPU at a toy size,
on the committed fixtures; a missing data folder is one line and status 2."""
from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import data_file

from egan_med.engine import steps
from scripts import bench, bench_data, gpu_bench

CIFAR = data_file("cifar10_airplane_automobile")
RADIOGRAPHS = data_file("cxr_covid_ccby", "train")


def _count_calls(monkeypatch, target, name: str, item: bool = False) -> list:
    """Replace target.name (or target[name]) with a wrapper recording each call; returns the record."""
    calls: list = []
    real = target[name] if item else getattr(target, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    (monkeypatch.setitem if item else monkeypatch.setattr)(target, name, spy)
    return calls


@pytest.mark.slow
def test_bench_quick_table_has_every_row(monkeypatch):
    calls = _count_calls(monkeypatch, steps.STEPS, "egan", item=True)  # what train.py's loop calls
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a smoke run: one thread cannot stall on cores shared with other jobs
    try:
        line, rows = bench.collect(quick=True, device="cpu", cifar=CIFAR, radiographs=RADIOGRAPHS)
    finally:
        torch.set_num_threads(threads)
    q = bench.QUICK
    assert len(calls) >= 2 * q.rounds * q.epochs * q.steps  # naive and optimised runs: training's own step timed
    assert "torch" in line and "cpu" in line
    names = [r.name for r in rows]
    for prefix in ("eGAN training, train.py", "eGAN training, first full epoch", "Scoring", "Cohort build",
                   "Loader, eval chain", "Loader, train chain"):
        assert sum(n.startswith(prefix) for n in names) == 1, (prefix, names)
    for r in rows:
        assert math.isfinite(r.ours) and r.ours > 0, r
        if r.reference == r.reference:  # speedup > 1 means ours is faster: for rates ours/reference
            assert r.speedup == pytest.approx(r.ours / r.reference) or r.speedup == pytest.approx(r.reference / r.ours), r
    table = bench.format_table(line, rows)
    assert table.count("\n| ") == len(rows) + 1  # header + one line per row


@pytest.mark.parametrize("flag", ["--cifar", "--radiographs"])
def test_bench_missing_data_folder_is_one_line(flag, tmp_path, capsys):
    args = {"--cifar": str(CIFAR), "--radiographs": str(RADIOGRAPHS), flag: str(tmp_path / "absent")}
    assert bench.main(["--quick", "--device", "cpu", *[x for kv in args.items() for x in kv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: data folder not found: ") and "absent" in err[0], err
    assert flag in err[0] and "Getting the public datasets" in err[0]
    assert bench_data.main(["--data", str(tmp_path / "absent"), "--quick"]) == 2
    assert capsys.readouterr().err.startswith("error: no .jpg under ")


@pytest.mark.slow
def test_gpu_bench_runs_on_cpu(tmp_path, capsys, monkeypatch):
    calls = _count_calls(monkeypatch, steps, "egan_step")
    out = tmp_path / "gpu.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert gpu_bench.main(["--device", "cpu", "--size", "32", "--batch", "8", "--minority", "2", "--pool", "8",
                               "--score-batch", "8", "--steps", "2", "--warmup", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert len(calls) == 2 * (1 + 2)  # two variants x (warm-up + timed steps) of training's own step function
    assert all(isinstance(c[2], steps.StepBatch) and c[2].n_real == 8 and len(c[2].x_min) == 2 for c in calls)
    assert [c[2].cached for c in calls] == [False] * 3 + [True] * 3  # naive, then the trunk cache
    ceiling = result["ceiling_densenet121_fwd_bwd_images_per_s"]
    for variant in ("naive", "feature_cache"):
        step = result["egan_step"][variant]
        assert step["percent_of_ceiling"] == pytest.approx(100 * step["train_images_per_s"] / ceiling)
    sc = result["scoring"]
    assert sc["ratio"] == pytest.approx(sc["ours_images_per_s"] / sc["bare_densenet121_images_per_s"])
    assert result["egan_step"]["feature_cache"]["cache_build_images_per_s"] > 0
