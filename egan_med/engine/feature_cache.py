"""Frozen-trunk feature cache: trunk activations of real images, computed once per run.

Before anything is stored the cache states its size (bytes per image x images) against what the device
can spare, and picks the form that fits (``plan_trunk_cache``): on the device as computed; in bfloat16
(half the bytes of float32); in a file on disk (``np.memmap``, read per batch); or off (training then runs
the trunk every step, as with ``train.feature_cache=false``). One line on stderr says which and why. The
storage is allocated in full before the first image is computed, so a cache that does not fit fails, or
is avoided, before training starts, never halfway through an epoch.
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from egan_med.models.backbones import Backbone

SHARE = 0.5  # the part of the free memory (device) or free space (disk) the cache may take; training needs the rest
FORMS = ("device", "bf16", "disk", "off")


def _gib(n: float) -> str:
    if n >= 2 ** 30:
        return f"{n / 2 ** 30:.2f} GiB"
    return f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:.1f} KiB"


@dataclass(frozen=True)
class CachePlan:
    """Where the trunk cache goes and why."""

    form: str  # one of FORMS
    bytes_per_image: int  # as computed (the trunk's output dtype)
    images: int
    free: int  # free bytes on the device (host RAM on CPU)
    disk_free: int
    reason: str

    @property
    def total(self) -> int:
        return self.bytes_per_image * self.images

    def line(self) -> str:
        size = f"{self.images:,} images x {_gib(self.bytes_per_image)} = {_gib(self.total)}"
        return f"trunk cache: {size}; {self.form}: {self.reason}"


def plan_trunk_cache(bytes_per_image: int, images: int, element_size: int, free: int, disk_free: int,
                     share: float = SHARE, where: str = "device memory") -> CachePlan:
    """Choose the cache's form from its size and the budgets (pure: tests give it fake budgets).

    Args:
        bytes_per_image: trunk output bytes of one image, in the dtype the trunk computes.
        images: how many images the cache holds.
        element_size: bytes per element of that dtype (4: float32 can halve to bfloat16).
        free: free bytes where the cache would live (GPU memory; available host RAM on CPU).
        disk_free: free bytes in the folder a disk cache would use.
        share: the part of ``free`` / ``disk_free`` the cache may take.
        where: how ``free`` is described in the reason.
    """
    need, room, disk_room = bytes_per_image * images, int(share * free), int(share * disk_free)
    budget = f"{share:.0%} of {_gib(free)} free {where}"
    if need <= room:
        form, why = "device", f"fits in {budget}"
    elif element_size == 4 and need // 2 <= room:
        form, why = "bf16", f"over {budget}; stored in bfloat16 ({_gib(need // 2)}), values rounded to 8 mantissa bits"
    elif need <= disk_room:
        form, why = "disk", (f"over {budget} even in bfloat16; kept in a file on disk ({share:.0%} of "
                             f"{_gib(disk_free)} free there), read per batch: slower steps")
    else:
        form, why = "off", (f"over {budget} and over {share:.0%} of {_gib(disk_free)} free disk; "
                            "the trunk runs every step instead (as train.feature_cache=false)")
    return CachePlan(form, bytes_per_image, images, free, disk_free, why)


def free_memory(device: torch.device) -> tuple[int, str]:
    """(free bytes, what they are): ``torch.cuda.mem_get_info`` on CUDA, MemAvailable of /proc/meminfo on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]), "GPU memory"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "host RAM"
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "host RAM"


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class _DiskPart:
    """One trunk output in an unlinked file (``np.memmap`` of its raw bytes; bfloat16 has no numpy dtype)."""

    def __init__(self, folder: str, n: int, shape: tuple[int, ...], dtype: torch.dtype):
        self.dtype, self.raw = dtype, _INT_OF_SIZE[torch.empty(0, dtype=dtype).element_size()]
        fd, path = tempfile.mkstemp(prefix="trunk_cache_", suffix=".bin", dir=folder)
        os.close(fd)
        try:
            self.map = np.memmap(path, dtype=torch.empty(0, dtype=self.raw).numpy().dtype, mode="w+", shape=(n, *shape))
        finally:
            os.unlink(path)  # the mapping keeps the data; nothing is left behind when the run ends

    def __setitem__(self, rows: slice, value: torch.Tensor) -> None:
        self.map[rows] = value.detach().cpu().contiguous().view(self.raw).numpy()

    def __getitem__(self, slots: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.map[slots.cpu().numpy()]).view(self.dtype)


class TrunkCache:
    """Trunk outputs (a tensor, or a tuple for DenseNet/ResNet splits) addressed by manifest row index.

    ``features`` are tensors on the device (any dtype; ``dtype`` is what ``take`` returns) or ``_DiskPart`` files.
    """

    def __init__(self, features: tuple, slot_of: torch.Tensor, dtype: tuple[torch.dtype, ...] | None = None,
                 device: torch.device | str | None = None, form: str = "device"):
        self.features, self.slot_of, self.form = features, slot_of, form
        self.dtype = dtype or tuple(f.dtype for f in features)
        self.device = torch.device(device) if device is not None else slot_of.device

    def take(self, index: torch.Tensor):
        slots = self.slot_of[torch.as_tensor(index, device=self.slot_of.device)]
        parts = tuple(f[slots].to(self.device, dt, non_blocking=True) for f, dt in zip(self.features, self.dtype))
        return parts[0] if len(parts) == 1 else parts


@torch.no_grad()
def trunk_cache(backbone: Backbone, dataset: Dataset, device: torch.device, batch_size: int = 256,
                free: int | None = None, disk_dir: str | None = None, disk_free: int | None = None,
                log=None) -> TrunkCache | None:
    """Run the frozen trunk once over ``dataset`` (deterministic items: augmentation must be off).

    Args:
        backbone: the network whose trunk output is cached.
        dataset: yields dicts with ``image`` and ``index``.
        device: where the cache lives (GPU memory on a GPU: it is read every step).
        batch_size: images per trunk forward.
        free: free bytes to plan against (default: measured, ``free_memory``); tests pass a small one.
        disk_dir: folder of a disk cache (default: the system temporary folder).
        disk_free: free bytes there (default: measured).
        log: where the one-line plan goes (default stderr).

    Returns:
        A ``TrunkCache``, or None when the plan is ``off`` (the caller then runs the trunk every step).
    """
    device = torch.device(device)
    n = len(dataset)
    if n == 0:
        raise ValueError("trunk cache: no images")
    first = dataset[0]
    probe = backbone.features_trunk(torch.as_tensor(first["image"])[None].to(device))
    probe = probe if isinstance(probe, tuple) else (probe,)
    shapes, dtypes = [tuple(p.shape[1:]) for p in probe], [p.dtype for p in probe]
    bytes_per_image = sum(p[0].numel() * p.element_size() for p in probe)
    element_size = max(p.element_size() for p in probe)
    del probe
    where = "GPU memory" if device.type == "cuda" else "host RAM"
    if free is None:
        free, where = free_memory(device)
    disk_dir = disk_dir or tempfile.gettempdir()
    if disk_free is None:
        disk_free = os.statvfs(disk_dir).f_bavail * os.statvfs(disk_dir).f_frsize
    plan = plan_trunk_cache(bytes_per_image, n, element_size, free, disk_free, where=where)
    print(plan.line(), file=log or sys.stderr)
    if plan.form == "off":
        return None
    if plan.form == "disk":
        store = [_DiskPart(disk_dir, n, s, dt) for s, dt in zip(shapes, dtypes)]
    else:
        keep = [torch.bfloat16 if plan.form == "bf16" and dt == torch.float32 else dt for dt in dtypes]
        store = [torch.empty((n, *s), dtype=dt, device=device) for s, dt in zip(shapes, keep)]
    slot_of_index: dict[int, int] = {}
    filled = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out = backbone.features_trunk(batch["image"].to(device))
        out = out if isinstance(out, tuple) else (out,)
        rows = slice(filled, filled + len(out[0]))
        for part, o in zip(store, out):
            part[rows] = o
        for i, idx in enumerate(torch.as_tensor(batch["index"]).tolist()):
            slot_of_index[idx] = filled + i
        filled += len(out[0])
    slot_of = torch.full((max(slot_of_index) + 1,), -1, dtype=torch.long)
    slot_of[list(slot_of_index)] = torch.tensor(list(slot_of_index.values()))
    return TrunkCache(tuple(store), slot_of.to(device), tuple(dtypes), device, plan.form)
