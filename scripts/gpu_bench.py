#!/usr/bin/env python
"""GPU speed of eGAN's training step and of scoring, against DenseNet121's own forward+backward ceiling.

Synthetic [0, 1] images made on the device, DenseNet121 E and D (random weights, the paper's freezing),
bf16 autocast, channels_last, warm-up, then CUDA-event timing. The step is train.py's own
(egan_med.engine.steps.egan_step: D on real majority + G(E(minority)), then E and G through D, E's frozen trunk
on the epoch's minority images computed once); its variants: ``naive`` (real images through all of D) and
``feature_cache`` (real images' frozen-trunk outputs cached, as train.feature_cache=true). Images/s counts
majority images, as train.py's train_images_per_s does.

    python scripts/gpu_bench.py --out gpu_bench.json                                    # ~1 min on an H200
    python scripts/gpu_bench.py --device cpu --size 32 --batch 8 --minority 2 --steps 2 --out x.json   # CI
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision

from egan_med.config import ModelConfig, TrainConfig  # noqa: E402
from egan_med.engine import steps as engine_steps  # noqa: E402
from egan_med.engine.steps import StepBatch, StepNets  # noqa: E402
from egan_med.engine.feature_cache import trunk_cache  # noqa: E402
from egan_med.engine.runtime import autocast  # noqa: E402
from egan_med.models import Discriminator, Encoder, EncoderGenerator, Generator, ScorePair  # noqa: E402

VARIANTS = ("naive", "feature_cache")


class Clock:
    """Seconds per call: CUDA events on a GPU (no host stalls inside the timed span), perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def time(self, fn: Callable[[], None], calls: int) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(calls):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000 / calls
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t) / calls


def layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def egan_step(a: argparse.Namespace, dev: torch.device, variant: str, clock: Clock) -> dict:
    """Majority images/s of train.py's eGAN step (engine.steps.egan_step itself); also the trunk-cache build
    rate for the cached variant."""
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="densenet121", discriminator="densenet121", weights="none", trainable_blocks=2)
    E, G, D = Encoder(cfg), Generator(cfg.latent_dim, a.size, 3), Discriminator(cfg)
    for n in (E, G, D):
        n.to(dev).train()
        if a.channels_last:
            n.to(memory_format=torch.channels_last)
    EG, pair = EncoderGenerator(E, G), ScorePair(D)
    eg_step, g_scorer = EG, D
    if a.compile:  # as train.py does under train.compile
        pair, eg_step, g_scorer = torch.compile(pair), torch.compile(EG), torch.compile(D)
    opt_d = torch.optim.Adam([p for p in D.parameters() if p.requires_grad], lr=1e-4)
    opt_g = torch.optim.Adam([p for p in EG.parameters() if p.requires_grad], lr=1e-4)
    nets = StepNets(D, pair, opt_d, EG, eg_step, g_scorer, opt_g)
    t = TrainConfig(amp=a.amp, channels_last=a.channels_last, feature_cache=variant == "feature_cache")
    pool = layout(torch.rand(a.pool, 3, a.size, a.size, device=dev), a.channels_last)
    x_min = layout(torch.rand(a.minority, 3, a.size, a.size, device=dev), a.channels_last)
    out: dict = {}
    cache = None
    if t.feature_cache:
        # Built exactly as train.py does (fp32, no autocast), from a dataset of dicts.
        items = [{"image": img, "index": i} for i, img in enumerate(pool.cpu())]
        built: list = []
        build_s = clock.time(lambda: built.append(trunk_cache(D.backbone, items, dev)), 1)
        cache = built[0]
        out["cache_build_images_per_s"] = a.pool / build_s
    with torch.no_grad(), autocast(dev, a.amp):  # once per epoch in train.py
        min_trunk = E.backbone.features_trunk(x_min)
    gen = torch.Generator(device=dev).manual_seed(0)

    def step() -> None:
        index = torch.randint(0, a.pool, (a.batch,), device=dev, generator=gen)
        real = cache.take(index) if cache is not None else layout(pool[index], a.channels_last)
        engine_steps.egan_step(t, nets, StepBatch(real, a.batch, x_min, min_trunk, cache is not None))

    clock.time(step, a.warmup)
    out["train_images_per_s"] = a.batch / clock.time(step, a.steps)
    return out


def scoring(a: argparse.Namespace, dev: torch.device, clock: Clock) -> dict:
    """D's inference images/s (as score_loader runs it) vs torchvision's densenet121 features + ReLU + pool."""
    cfg = ModelConfig(encoder="densenet121", discriminator="densenet121", weights="none", trainable_blocks=2)
    D = Discriminator(cfg).to(dev).eval()
    bare = torchvision.models.densenet121(weights=None).features.to(dev).eval()
    if a.channels_last:
        D.to(memory_format=torch.channels_last)
        bare.to(memory_format=torch.channels_last)
    x = layout(torch.rand(a.score_batch, 3, a.size, a.size, device=dev), a.channels_last)
    rates = {}
    for name, fn in (("ours", lambda: D(x)), ("bare", lambda: F.adaptive_avg_pool2d(F.relu(bare(x)), 1).flatten(1))):
        with torch.no_grad(), autocast(dev, a.amp):
            clock.time(fn, a.warmup)
            rates[name] = a.score_batch / clock.time(fn, a.steps)
    return {"ours_images_per_s": rates["ours"], "bare_densenet121_images_per_s": rates["bare"],
            "ratio": rates["ours"] / rates["bare"]}


def ceiling(a: argparse.Namespace, dev: torch.device, clock: Clock) -> float:
    """Images/s of a bare torchvision densenet121, every parameter trainable, forward+backward at the batch."""
    net = torchvision.models.densenet121(weights=None).to(dev).train()
    if a.channels_last:
        net.to(memory_format=torch.channels_last)
    x = layout(torch.rand(a.batch, 3, a.size, a.size, device=dev), a.channels_last)

    def step() -> None:
        with autocast(dev, a.amp):
            loss = net(x).float().mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    clock.time(step, a.warmup)
    return a.batch / clock.time(step, a.steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128, help="majority images per step (and the ceiling's batch)")
    p.add_argument("--minority", type=int, default=30, help="minority images per step (paper CheXpert: 30)")
    p.add_argument("--pool", type=int, default=1080, help="majority images the trunk cache holds (paper: 1080)")
    p.add_argument("--score-batch", type=int, default=256, help="train.py's eval loader batch")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-amp", dest="amp", action="store_false", help="fp32 instead of bf16 autocast")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true", help="torch.compile the step modules (minutes of compiling)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--out", required=True, help="JSON file to write")
    a = p.parse_args(argv)
    a.pool = max(a.pool, a.batch)
    unknown = set(a.variants.split(",")) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}")
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    else:
        torch.set_flush_denormal(True)  # as train.py does on CPU: denormals slow CPU convolutions
    clock = Clock(dev)
    result: dict = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "settings": {k: v for k, v in vars(a).items() if k != "out"},
        "counts": ("images/s = majority images per second, as train.py's train_images_per_s; cached variants skip "
                   "D's trunk for them, so their percent of the ceiling can pass 100"),
    }
    result["ceiling_densenet121_fwd_bwd_images_per_s"] = ceiling(a, dev, clock)
    result["egan_step"] = {}
    for v in a.variants.split(","):
        r = egan_step(a, dev, v, clock)
        r["percent_of_ceiling"] = 100 * r["train_images_per_s"] / result["ceiling_densenet121_fwd_bwd_images_per_s"]
        result["egan_step"][v] = r
        print(f"{v}: {r}", flush=True)
    result["scoring"] = scoring(a, dev, clock)
    if dev.type == "cuda":
        result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    with open(a.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
