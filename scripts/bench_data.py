"""Images/s for decode+transform straight from JPEG vs from the persistent uint8 cache (and MONAI PersistentDataset).

Reads the JPEG radiographs under ``--data`` (default data/cxr_covid_ccby/train), cycling over them to ``--reads`` reads,
single process (per-worker throughput), for the deterministic eval chain and the augmenting train chain.

    .venv/bin/python scripts/bench_data.py            # 3030 reads at 224 px
    .venv/bin/python scripts/bench_data.py --quick    # a few seconds
"""
from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import PersistentDataset
from monai.transforms import Lambdad

from egan_med.config import DataConfig
from egan_med.data import make_dataset
from egan_med.data.cache import build_store
from egan_med.data.transforms import augment_item, build_augment, expand_channels, item_seed, preprocess

# Any folder of JPEG radiographs; tests/data/cxr_covid_ccby holds 24 (README: Getting the public datasets).
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "cxr_covid_ccby" / "train"


def rate(fn, reads: int) -> float:
    """Images per second of ``fn(i)`` over ``reads`` calls (after one warm-up call)."""
    fn(0)
    start = time.perf_counter()
    for i in range(reads):
        fn(i)
    return reads / (time.perf_counter() - start)


def direct_item(paths: list[str], cfg: DataConfig, chain, i: int) -> torch.Tensor:
    """What a cache-less dataset would do per item: decode, fit, quantise, augment."""
    img = torch.from_numpy(preprocess(paths[i % len(paths)], cfg).astype(np.float32) / 255.0)
    return expand_channels(augment_item(chain, img, item_seed(0, 0, i)), cfg.channels)


def _preprocess_for_persistent(path: str, cfg: DataConfig) -> np.ndarray:
    return preprocess(path, cfg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of JPEG radiographs (searched recursively)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reads", type=int, default=3030)
    parser.add_argument("--quick", action="store_true", help="64 px, 200 reads: a tiny CPU smoke run")
    args = parser.parse_args(argv)
    size, reads = (64, 200) if args.quick else (args.size, args.reads)
    torch.set_num_threads(1)  # one DataLoader worker's view; workers scale this by their count
    files = sorted(str(p) for p in Path(args.data).rglob("*.jpg"))
    if not files:
        print(f"error: no .jpg under {args.data} (--data): pass a folder of JPEG radiographs, e.g. "
              "tests/data/cxr_covid_ccby/train or CheXpert-v1.0-small/train", file=sys.stderr)
        return 2
    df = pd.DataFrame({"path": files, "minority": 0})
    print(f"{len(files)} JPEGs, {reads} reads per measurement, {size} px, 1 thread")

    with tempfile.TemporaryDirectory() as tmp:
        cfg = DataConfig(image_size=size, channels=3, cache_dir=str(Path(tmp) / "npy"), num_workers=1)
        start = time.perf_counter()
        build_store(files, cfg)
        print(f"cache build (decode+resize once): {len(files) / (time.perf_counter() - start):8.1f} img/s")
        results = {}
        for name, train in (("eval", False), ("train", True)):
            chain = build_augment(cfg, train)
            ds = make_dataset(df, "/", cfg, train=train)
            jpeg = rate(functools.partial(direct_item, files, cfg, chain), reads)
            cached = rate(lambda i: ds[i % len(ds)], reads)
            results[name] = (jpeg, cached)
            print(f"{name:5s} chain  from JPEG: {jpeg:8.1f} img/s   from cache: {cached:9.1f} img/s   "
                  f"ratio {cached / jpeg:6.1f}x")

        persistent = PersistentDataset(
            data=[{"image": f} for f in files], cache_dir=str(Path(tmp) / "pt"),
            transform=Lambdad("image", functools.partial(_preprocess_for_persistent, cfg=cfg)))
        for i in range(len(files)):
            persistent[i]  # fill its .pt cache
        pt = rate(lambda i: persistent[i % len(files)], reads)
        print(f"eval  chain  MONAI PersistentDataset (.pt per item): {pt:8.1f} img/s "
              f"(npy memmap is {results['eval'][1] / pt:.1f}x faster)")
    jpeg, cached = results["eval"]
    verdict = "meets" if cached / jpeg >= 10 else "misses"
    print(f"decode+transform, cache vs JPEG: {cached / jpeg:.1f}x ({verdict} the >=10x goal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
