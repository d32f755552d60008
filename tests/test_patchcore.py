"""PatchMemory: layers picked by their real stride, memory bounded by the cap (not by the number of images),
the greedy coreset, and chunked nearest-neighbour search equal to the unchunked one."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from egan_med.models.distances import nearest_squared, squared_distances
from egan_med.models.patchcore import PatchMemory, greedy_coreset


@pytest.fixture(scope="module")
def lite0():
    return PatchMemory("efficientnet_lite0", "none", memory=50, seed=0, load=False)


@pytest.mark.parametrize("size, grid", [(28, 4), (32, 4), (100, 13)])
def test_patches_come_from_the_stride_8_and_16_maps_at_any_size(lite0, size, grid):
    # EfficientNet-Lite0's last stride-8 unit has 40 channels, its last stride-16 unit 112: both, on the stride-8 grid.
    # (round(size / side) took 28 px's 4x4 map for stride 7 and gave one global patch; at 100 px it lost stride 16.)
    with torch.no_grad():
        p = lite0.patches(torch.rand(2, 3, size, size))
    assert tuple(p.shape) == (2, grid * grid, 40 + 112)


def test_chunked_nearest_equals_the_full_top_k():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(9, 5, generator=g), torch.randn(23, 5, generator=g)
    full = squared_distances(a, b)
    for k in (1, 3, 30):
        want = torch.topk(full, min(k, 23), dim=1, largest=False).values
        torch.testing.assert_close(nearest_squared(a, b, k, chunk=4), want)
        torch.testing.assert_close(nearest_squared(a, b, k, chunk=100), want)


def test_greedy_coreset_covers_a_small_far_cluster_that_random_misses():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(2000, 256, generator=g) * 0.1, 5.0 + torch.randn(4, 256, generator=g) * 0.1])
    chosen = greedy_coreset(x, 20, seed=0)
    assert len(set(chosen.tolist())) == 20 and (chosen >= 2000).any()
    # Its covering radius (farthest point from the chosen ones) is far below a random subset's.
    radius = squared_distances(x, x[chosen]).min(1).values.max()
    random = torch.randperm(len(x), generator=g)[:20]
    assert radius < 0.5 * squared_distances(x, x[random]).min(1).values.max()


def _loader(n: int, size: int = 32, batch: int = 4):
    g = torch.Generator().manual_seed(1)
    items = [{"image": torch.rand(3, size, size, generator=g), "minority": 0} for _ in range(n)]
    return torch.utils.data.DataLoader(items, batch_size=batch)


@pytest.mark.parametrize("subsample", ["random", "coreset"])
def test_streamed_fit_keeps_the_cap_and_does_not_depend_on_the_batch_size(lite0, subsample):
    pm = PatchMemory("efficientnet_lite0", "none", memory=50, seed=3, load=False, subsample=subsample, pool=120)
    pm.load_state_dict(lite0.state_dict(), strict=False)
    a = pm.fit(_loader(12, batch=4)).bank.clone()  # 12 images x 16 patches = 192 > pool 120 > cap 50
    assert a.shape == (50, 152) and pm.peak_rows <= 120 + 4 * 16
    b = pm.fit(_loader(12, batch=5)).bank
    torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_forward_traces_with_a_chunked_memory(lite0, monkeypatch):
    monkeypatch.setattr(nearest_squared, "__defaults__", (16,))  # 50 memory patches: four chunks
    pm = lite0.fit(_loader(8))
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        eager = pm(x)
        traced = torch.jit.trace(pm, x)
        torch.testing.assert_close(traced(torch.rand(5, 3, 32, 32)).shape, torch.Size([5]))
        torch.testing.assert_close(traced(x), eager)


_BOUND = r"""
import json, sys, torch
torch.set_num_threads(1)
from egan_med.models.patchcore import PatchMemory

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024

pm = PatchMemory("efficientnet_lite0", "none", memory=500, seed=0, load=False, pool=2000)
B, P, C = 8, 1024, 512  # one batch of patches: 16 MiB
pm.patches = lambda x: torch.randn(len(x), P, C)
def loader(n_batches):
    return [{"image": torch.zeros(B, 1, 1, 1), "minority": torch.zeros(B)} for _ in range(n_batches)]
pm.fit(loader(4))
small = hwm()
pm.fit(loader(16))
print(json.dumps({"small": small, "large": hwm(), "batch": B * P * C * 4, "rows": len(pm.bank)}))
"""


@pytest.mark.slow
def test_fit_peak_memory_does_not_grow_with_the_number_of_images():
    # Four times the images, same cap: the old fit held every patch (16 batches = 256 MiB, then a copy).
    out = subprocess.run([sys.executable, "-c", _BOUND], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["rows"] == 500
    assert r["large"] - r["small"] < r["batch"], r


@pytest.mark.parametrize("subsample", ["coreset", "random"])
def test_the_config_key_reaches_the_patch_memory(tmp_path, monkeypatch, subsample):
    import egan_med.models.patchcore as pc
    from egan_med.config import load_config
    from egan_med.evaluation.detectors import oneclass_scores

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise LookupError("built")

    monkeypatch.setattr(pc, "PatchMemory", fake)
    cfg = load_config("configs/demo.yaml", [f"model.patch_subsample={subsample}"])
    with pytest.raises(LookupError):
        oneclass_scores(cfg, None, "patchcore", str(tmp_path))
    assert seen["subsample"] == subsample
