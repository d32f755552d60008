"""The trunk cache states its size and picks a form that fits: on the device, bfloat16, on disk, or off."""
from __future__ import annotations

import io

import pytest
import torch

from egan_med.engine.feature_cache import plan_trunk_cache, trunk_cache
from egan_med.models.backbones import Backbone

MIB = 2 ** 20


@pytest.mark.parametrize("free, disk, element, form", [
    (1000 * MIB, 0, 4, "device"),  # 100 MiB needed, 500 MiB allowed
    (150 * MIB, 0, 4, "bf16"),  # 75 MiB allowed: 50 MiB in bfloat16 fits
    (150 * MIB, 0, 2, "off"),  # already 2-byte: nothing to halve, and no disk
    (50 * MIB, 1000 * MIB, 4, "disk"),
    (50 * MIB, 100 * MIB, 4, "off"),  # disk too: 50 MiB allowed there
])
def test_plan_picks_the_form_that_fits(free, disk, element, form):
    plan = plan_trunk_cache(100 * 1024, 1024, element, free, disk)  # 1,024 images x 100 KiB = 100 MiB
    assert plan.form == form and plan.total == 100 * MIB
    assert plan.line().startswith(f"trunk cache: 1,024 images x 100.0 KiB = 100.0 MiB; {form}: ")


@pytest.fixture(scope="module")
def net_and_data():
    torch.manual_seed(0)
    net = Backbone("efficientnet_lite0", "imagenet", trainable_units=1).eval()
    data = [{"image": torch.rand(3, 32, 32), "index": 10 + 3 * i} for i in range(6)]
    with torch.no_grad():
        want = net.features_trunk(torch.stack([d["image"] for d in data]))
    return net, data, want


def _cache(net, data, **budget):
    log = io.StringIO()
    cache = trunk_cache(net, data, torch.device("cpu"), batch_size=4, log=log, **budget)
    return cache, log.getvalue()


def test_a_cache_that_fits_is_kept_as_computed(net_and_data):
    net, data, want = net_and_data
    cache, line = _cache(net, data, free=2 ** 40)
    assert cache.form == "device" and "; device: fits in 50% of" in line
    torch.testing.assert_close(cache.take(torch.tensor([16, 10])), want[[2, 0]], rtol=0, atol=0)


def test_a_small_budget_gives_bfloat16_then_disk_then_off(net_and_data, tmp_path):
    net, data, want = net_and_data
    per_image = want[0].numel() * 4  # float32 trunk output
    cache, line = _cache(net, data, free=2 * 6 * per_image // 2 + 64, disk_free=0)
    assert cache.form == "bf16" and cache.features[0].dtype == torch.bfloat16 and "bfloat16" in line
    got = cache.take(torch.tensor([25, 13]))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want[[5, 1]], rtol=1e-2, atol=1e-2)

    cache, line = _cache(net, data, free=per_image, disk_dir=str(tmp_path), disk_free=2 ** 40)
    assert cache.form == "disk" and "on disk" in line
    torch.testing.assert_close(cache.take(torch.tensor([25, 13, 10])), want[[5, 1, 0]], rtol=0, atol=0)
    assert list(tmp_path.iterdir()) == []  # the file is unlinked at once: nothing left behind

    cache, line = _cache(net, data, free=per_image, disk_free=per_image)
    assert cache is None and "; off: " in line and "the trunk runs every step" in line
