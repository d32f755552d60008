"""Train eGAN (or the supervised baseline) on a cohort: ``python -m egan_med.train CONFIG``.

One explicit loop, top to bottom. Each epoch: D learns majority = real (1) and G(E(minority)) =
fake (0); E and G learn to make D call their output real; then D scores val and test, and the
epoch is logged, checkpointed and, if the validation rule prefers it, kept as ``best``.
Multi-GPU: ``torchrun --nproc_per_node N -m egan_med.train CONFIG`` (DDP; rank 0 writes).
"""
from __future__ import annotations

import copy
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from egan_med.cli import ArgumentParser, boundary
from egan_med.config import Config, ConfigError, load_config
from egan_med.engine.checkpoint import epoch_weights_path, load_checkpoint, save_checkpoint, trainable_state
from egan_med.engine.steps import STEPS, StepBatch, StepNets
from egan_med.engine.rundir import (RunDirError, check_run_dir, create_run_dir, discard_unused_run_dirs, release_run_dirs,
                                    write_table_atomic)
from egan_med.engine.runtime import Runtime, autocast, rng_state, seed_everything, set_rng_state, setup_runtime, teardown
from egan_med.evaluation.scoring import score_loader
from egan_med.cohort.splits import CohortSplits, load_splits
from egan_med.xrv import run_leak_warning
from egan_med.models import (Classifier, Discriminator, Encoder, EncoderGenerator, Generator, ScorePair, WeightsError,
                             check_weights, count_parameters)
from egan_med.engine.feature_cache import trunk_cache
from egan_med.evaluation import metrics, selection
from egan_med.evaluation.detectors import ONECLASS, fit_oneclass_run, save_epoch_scores


def build_networks(cfg: Config) -> dict[str, torch.nn.Module]:
    """The networks of ``cfg.model.kind``: E, G, D for eGAN; C for the supervised baseline."""
    if cfg.model.kind == "egan":
        from egan_med.data.transforms import stored_channels
        # G makes the channels a real image is stored with (1 for grayscale), repeated to data.channels
        # the way real images are: three independent channels would let D spot fakes by colour alone.
        G = Generator(cfg.model.latent_dim, cfg.data.image_size, stored_channels(cfg.data), cfg.data.channels)
        return {"E": Encoder(cfg.model), "G": G, "D": Discriminator(cfg.model)}
    if cfg.model.kind == "supervised":
        return {"C": Classifier(cfg.model)}
    raise ConfigError(f"model.kind={cfg.model.kind!r} is not trained by this loop; use egan or supervised")


def _epoch_metrics(prefix: str, y, logits, nash_threshold: float) -> dict:
    m = metrics.binary_metrics(y, -logits, threshold=0.0)  # the paper's rule: logit < 0 = minority
    row = {f"{prefix}_{k}": m[k] for k in metrics.METRIC_NAMES + metrics.COUNT_NAMES}
    row[f"{prefix}_nash"] = bool(selection.is_nash(m["correct_minority"], m["correct_majority"],
                                                   m["n_minority"] + m["n_majority"], nash_threshold,
                                                   n_minority=m["n_minority"]))
    return row


def _check_classes_left(ds_major, ds_minor, ds_eval: dict, skipped: list) -> None:
    """Refuse, in one line, a split that data.on_bad_image=skip left without one of its classes.

    Raises:
        CohortError: naming the split, the class and an example of the unreadable images.
    """
    from egan_med.cohort import CohortError
    left = {("train", "minority"): len(ds_minor), ("train", "majority"): len(ds_major)}
    for split, ds in ds_eval.items():
        n_min = sum(d["minority"] for d in ds.data)
        left[(split, "minority")], left[(split, "majority")] = n_min, len(ds) - n_min
    for (split, cls), n in left.items():
        if n == 0:
            example = f"; e.g. {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
            raise CohortError(f"the {split} split has no readable {cls} image left after data.on_bad_image=skip "
                              f"({len(skipped)} unreadable image(s) in the cohort{example})")


def train(cfg: Config, run_dir: str, resume: bool | None = None, force: bool = False) -> str:
    """Train one run and write its directory.

    Args:
        cfg: the resolved config.
        run_dir: output directory.
        resume: True = must resume; None = resume if a checkpoint of this config exists; False = never.
        force: replace a run directory that belongs to another config.

    Returns:
        The run directory.
    """
    wipe = check_run_dir(run_dir, cfg, resume=resume, force=force)  # fail before any expensive work
    rt: Runtime = setup_runtime(cfg.train.device)
    try:
        return _train(cfg, run_dir, rt, resume, wipe)
    finally:
        teardown(rt)


@dataclass
class _Data:
    """What one run trains and scores on."""

    splits: CohortSplits
    major: Any  # CohortDataset of the training majority
    minor: Any  # CohortDataset of the training minority
    loader: Any  # DataLoader over ``major``
    eval_loaders: dict  # "val"/"test" -> DataLoader
    skipped: list  # (path, reason) of images left out under data.on_bad_image=skip


def _load_data(cfg: Config, rt: Runtime) -> _Data:
    """Cohort, datasets and loaders; raises before anything is written when a class has no readable image."""
    from egan_med import data as dl
    from egan_med.data.samplers import BatchShardSampler

    t = cfg.train
    splits: CohortSplits = load_splits(cfg)
    skipped: list = []
    ds_major = dl.make_dataset(splits.train_majority, splits.root, cfg.data, train=True, seed=t.seed, skipped=skipped)
    ds_minor = dl.make_dataset(splits.train_minority, splits.root, cfg.data, train=True, seed=t.seed + 1, skipped=skipped)
    ds_eval = {s: dl.make_dataset(getattr(splits, s), splits.root, cfg.data, train=False, skipped=skipped) for s in ("val", "test")}
    _check_classes_left(ds_major, ds_minor, ds_eval, skipped)  # before the run directory exists
    # DDP: each rank takes its slice of the single-process batch, so N processes train like one.
    sampler = BatchShardSampler(ds_major, t.seed, t.batch_size, rt.rank, rt.world_size) if rt.distributed else None
    loader = dl.make_loader(ds_major, t.batch_size // rt.world_size, shuffle=sampler is None,
                            num_workers=cfg.data.num_workers, seed=t.seed, sampler=sampler)
    eval_loaders = {s: dl.make_loader(d, 256, shuffle=False, num_workers=cfg.data.num_workers, seed=t.seed)
                    for s, d in ds_eval.items()}
    return _Data(splits, ds_major, ds_minor, loader, eval_loaders, skipped)


def _build_step(cfg: Config, nets: dict, rt: Runtime) -> tuple[StepNets, dict]:
    """Optimisers and the (DDP-wrapped, maybe compiled) modules the step functions update."""
    t, dev, egan = cfg.train, rt.device, cfg.model.kind == "egan"
    D = nets["D"] if egan else nets["C"]
    adam = lambda module, lr: torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr, betas=(t.beta1, 0.999))
    optimizers = {"opt_d": adam(D, t.lr_d)}
    EG = EncoderGenerator(nets["E"], nets["G"]) if egan else None
    if egan:
        optimizers["opt_g"] = adam(EG, t.lr_g)
    ddp = (lambda m: DDP(m, device_ids=[dev.index] if dev.type == "cuda" else None)) if rt.distributed else (lambda m: m)
    pair_step, eg_step = ddp(ScorePair(D)), (ddp(EG) if egan else None)
    g_scorer = D  # D as seen by the generator step (no DDP: only E and G learn there)
    if t.compile:
        pair_step, g_scorer = torch.compile(pair_step), torch.compile(D)
        eg_step = torch.compile(eg_step) if egan else None
    return StepNets(D, pair_step, optimizers["opt_d"], EG, eg_step, g_scorer, optimizers.get("opt_g")), optimizers


def _resume(run_dir: str, nets: dict, optimizers: dict, rt: Runtime, epochs: int) -> tuple[list[dict], int]:
    """(history, first epoch to run) from RUN_DIR/checkpoints/last.pt, restoring networks, optimisers and RNGs."""
    state = load_checkpoint(os.path.join(run_dir, "checkpoints", "last.pt"))
    for k, n in nets.items():
        n.load_state_dict(state["models"][k])
    for k, o in optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    set_rng_state(state["rng"])
    start_epoch = int(state["epoch"]) + 1
    if rt.is_main:
        print(f"resuming {run_dir} after epoch {start_epoch} of {epochs}", file=sys.stderr)
    return state["history"], start_epoch


def _train_epoch(cfg: Config, d: _Data, nets: dict, step_nets: StepNets, major_cache, min_rows: list[int],
                 epoch: int, rt: Runtime) -> tuple[torch.Tensor, tuple[float, float], int]:
    """One pass of the step function over the epoch's majority batches.

    Returns:
        (this epoch's minority images, (mean D loss, mean G loss), steps taken).
    """
    t, dev, egan = cfg.train, rt.device, cfg.model.kind == "egan"
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    # Every random draw of an epoch follows from (seed, epoch): a resumed run redoes it exactly.
    seed_everything(t.seed * 100003 + epoch)
    for ds in (d.major, d.minor):
        ds.set_epoch(epoch)
    if d.loader.generator is not None:
        d.loader.generator.manual_seed(t.seed * 100003 + epoch)
    x_min = torch.stack([d.minor[i]["image"] for i in min_rows]).to(dev).contiguous(memory_format=fmt)
    min_trunk = None
    if egan:
        # E's trunk is frozen and in eval mode: its output on this epoch's minority images is the same every step.
        with torch.no_grad(), autocast(dev, t.amp):
            min_trunk = nets["E"].backbone.features_trunk(x_min)
    step_fn, rows = STEPS[cfg.model.kind], torch.as_tensor(d.major.rows)  # dataset position -> the cache's address
    sums = torch.zeros(2, device=dev)
    steps = len(d.loader) if t.max_steps_per_epoch == 0 else min(len(d.loader), t.max_steps_per_epoch)
    # With the cache only the order is needed: the batch sampler skips building images nobody reads.
    bar = tqdm(d.loader.batch_sampler if major_cache is not None else d.loader, total=steps,
               desc=f"epoch {epoch + 1}/{t.epochs}", leave=False, disable=not rt.is_main)
    for step, batch in enumerate(bar):
        if step >= steps:
            break
        if major_cache is not None:
            real, n_real = major_cache.take(rows[batch]), len(batch)
        else:
            real = batch["image"].to(dev, non_blocking=True).contiguous(memory_format=fmt)
            n_real = len(real)
        sums += step_fn(t, step_nets, StepBatch(real, n_real, x_min, min_trunk, major_cache is not None))
    if rt.distributed:
        torch.distributed.all_reduce(sums)
        sums /= rt.world_size
    loss_d, loss_g = (sums / max(steps, 1)).tolist()  # one host sync per epoch
    return x_min, (loss_d, loss_g), steps


def _end_epoch(cfg: Config, run_dir: str, row: dict, history: list[dict], d: _Data, nets: dict, optimizers: dict,
               step_nets: StepNets, writer, x_min: torch.Tensor, t0: float) -> None:
    """Score val and test, log the epoch, write metrics.csv and the checkpoints (main process only)."""
    t, epoch, dev = cfg.train, row["epoch"], x_min.device
    scored = {}
    for split, ld in d.eval_loaders.items():
        y, logits, _ = score_loader(step_nets.D, ld, dev)  # float32, as predict scores
        scored[split] = (y, logits)
        row.update(_epoch_metrics(split, y, logits, cfg.eval.nash_threshold))
    row["seconds"] = time.time() - t0
    history.append(row)
    _log_epoch(writer, row, step_nets.EG, x_min, epoch)
    for split, (y, logits) in scored.items():  # minority is the positive class, score = -logit
        writer.add_pr_curve(f"{split}/pr_curve", y, torch.sigmoid(-torch.as_tensor(logits)), epoch)
    write_table_atomic(pd.DataFrame(history), os.path.join(run_dir, "metrics.csv"))
    save_epoch_scores(run_dir, epoch, scored)  # any label budget can pick its own epoch later
    # cwd: relative paths in the config (cohort, root, cache) mean "from where training ran", so
    # evaluate/predict/export can resolve them from any working directory.
    state = {"config": cfg.to_dict(), "cwd": os.getcwd(), "epoch": epoch, "history": history, "rng": rng_state(),
             "models": {k: n.state_dict() for k, n in nets.items()},
             "optimizers": {k: o.state_dict() for k, o in optimizers.items()}}
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    # The scoring network's changeable weights of every epoch (small: the frozen trunk is not repeated), so the
    # detector deployed under any label budget is the epoch that budget chose, not only best.pt's.
    scorer = "D" if "D" in nets else "C"
    save_checkpoint({"config": cfg.to_dict(), "epoch": epoch, "models": {scorer: trainable_state(nets[scorer])}},
                    epoch_weights_path(run_dir, epoch), keep_previous=False)
    chosen = selection.select_epoch(history, cfg.eval.select, cfg.eval.nash_threshold)
    if chosen.epoch == epoch:
        save_checkpoint(state, os.path.join(ckpt_dir, "best.pt"), keep_previous=False)
    if (epoch + 1) % t.checkpoint_every == 0 or epoch + 1 == t.epochs:
        save_checkpoint(state, os.path.join(ckpt_dir, "last.pt"))
    print(f"epoch {epoch + 1}/{t.epochs}  loss_d {row['loss_d']:.3f}  loss_g {row['loss_g']:.3f}  "
          f"val auroc {row['val_auroc']:.3f} f1 {row['val_f1']:.3f}  test correct min/maj "
          f"{row['test_correct_minority']}/{row['test_correct_majority']}  {row['seconds']:.1f}s", file=sys.stderr)


def _train(cfg: Config, run_dir: str, rt: Runtime, resume: bool | None, wipe: bool) -> str:
    from torch.utils.tensorboard import SummaryWriter
    from egan_med import data as dl
    from egan_med.data.samplers import minority_subset

    t, dev, egan = cfg.train, rt.device, cfg.model.kind == "egan"
    if rt.distributed and t.r1_gamma > 0:
        raise ConfigError("train.r1_gamma: the R1 penalty is single-process only; set it to 0 under torchrun")
    seed_everything(t.seed)
    d = _load_data(cfg, rt)
    nets = build_networks(cfg)
    # NHWC: faster DenseNet121 steps on CPU (oneDNN), and the layout bf16 cuDNN kernels want.
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    for n in nets.values():
        n.to(dev).to(memory_format=fmt).train()
    min_rows = minority_subset(len(d.minor), t.minority_cap, t.seed)  # seeded, not the first rows
    if egan and len(min_rows) < 2 and any(m.training for m in nets["E"].modules() if isinstance(m, torch.nn.BatchNorm2d)):
        raise ConfigError(f"BatchNorm in training mode (model.train_bn, or model.weights=none) needs at least 2 minority "
                          f"training images per step; this cohort/fold has {len(min_rows)}")
    # Only now, with cohort, images and weights all readable, does anything get written.
    if rt.is_main:
        create_run_dir(run_dir, cfg, wipe)
    if rt.distributed:
        torch.distributed.barrier()
    step_nets, optimizers = _build_step(cfg, nets, rt)
    history, start_epoch, last = [], 0, os.path.join(run_dir, "checkpoints", "last.pt")
    if resume is not False and not wipe and (os.path.exists(last) or os.path.exists(last + ".prev")):
        history, start_epoch = _resume(run_dir, nets, optimizers, rt, t.epochs)
    writer = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=start_epoch) if rt.is_main else None
    if writer is not None and start_epoch == 0:
        grid = dl.save_augmentation_grid(d.major, os.path.join(run_dir, "augmentations.png"), n=16)
        writer.add_image("data/augmented_real", grid, 0)
        _print_summary(cfg, d.splits, nets)

    # Frozen-trunk cache: real images never change without augmentation, so their trunk activations
    # are computed once; generated images still pass through all of D.
    # Under the training autocast: the uncached path runs the trunk in bf16 there, and the two must agree.
    with autocast(dev, t.amp):
        major_cache = trunk_cache(step_nets.D.backbone, d.major, dev) if t.feature_cache else None
    for epoch in range(start_epoch, t.epochs):
        t0 = time.time()
        x_min, (loss_d, loss_g), steps = _train_epoch(cfg, d, nets, step_nets, major_cache, min_rows, epoch, rt)
        train_seconds = time.time() - t0
        row = {"epoch": epoch, "loss_d": loss_d, "loss_g": loss_g if egan else math.nan,
               "train_seconds": train_seconds, "train_images_per_s": steps * t.batch_size / max(train_seconds, 1e-9)}
        if rt.is_main:
            _end_epoch(cfg, run_dir, row, history, d, nets, optimizers, step_nets, writer, x_min, t0)
        if rt.distributed:
            torch.distributed.barrier()

    if rt.is_main:
        if d.skipped:
            pd.DataFrame(d.skipped, columns=["path", "reason"]).to_csv(os.path.join(run_dir, "skipped_images.csv"), index=False)
        writer.close()
    return run_dir


def _log_epoch(writer, row: dict, EG, x_min, epoch: int) -> None:
    for key, value in row.items():
        if key != "epoch" and isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            split, _, name = key.partition("_")
            tag = f"{split}/{name}" if split in ("val", "test") else f"train/{key}"
            writer.add_scalar(tag, float(value), epoch)
    if EG is not None:
        with torch.no_grad():
            EG.eval()
            fake = EG(x_min[:16]).float().cpu()
            EG.train()
        import torchvision
        writer.add_image("train/generated", torchvision.utils.make_grid(fake, nrow=4), epoch)
    writer.flush()


def _print_summary(cfg: Config, splits: CohortSplits, nets: dict) -> None:
    print(f"run '{cfg.name}': {cfg.model.kind} on {cfg.data.cohort} at {cfg.data.image_size}px", file=sys.stderr)
    for split, (n_min, n_maj) in splits.sizes().items():
        print(f"  {split:5s}: {n_min} minority / {n_maj} majority", file=sys.stderr)
    for k, n in nets.items():
        total, trainable = count_parameters(n)
        print(f"  {k}: {total:,} parameters, {trainable:,} trainable", file=sys.stderr)
    leak = run_leak_warning(cfg, splits.meta)
    if leak:
        print(f"warning: {leak}", file=sys.stderr)


def dry_run(cfg: Config) -> None:
    """Build cohort and networks, print parameter counts and split sizes, and exit."""
    splits = load_splits(cfg)
    nets = build_networks(cfg) if cfg.model.kind not in ONECLASS else {}
    _print_summary(cfg, splits, nets)


@boundary("training")
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m egan_med.train", description=__doc__.splitlines()[0])
    p.add_argument("config", help="YAML config, e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", help="key.sub=value, e.g. train.epochs=3")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--dry-run", action="store_true", help="build cohort and networks, print sizes, exit")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (fails if it has no checkpoint)")
    p.add_argument("--force", action="store_true",
                   help="train into a run directory of another config (or a non-empty folder): deletes only the files "
                        "egan_med wrote there (config, metrics, checkpoints, reports, plots, tb/), keeps the rest")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads per process (default: torch's choice). On a busy shared CPU, 1 avoids "
                        "OpenMP spin-waiting, measured ~10x slower per step with 2 threads on 2 shared cores")
    args = p.parse_intermixed_args(argv)  # options and key=value overrides in any order
    if args.threads < 0:
        print(f"error: --threads must be >= 0, got {args.threads}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    from egan_med.cohort import CohortError
    from egan_med.data import BadImageError
    from egan_med.engine.checkpoint import CheckpointError
    try:
        cfg = load_config(args.config, args.overrides)
        if args.dry_run:
            dry_run(cfg)
            return 0
        run_dir = args.out or os.path.join("runs", cfg.name)
        if cfg.model.kind in ONECLASS:  # nothing to train: fit on the majority images, score, report
            check_weights(cfg.model.discriminator, cfg.model.weights_for("discriminator"))  # before the run dir
            fit_oneclass_run(cfg, run_dir, force=args.force)
        else:
            train(cfg, run_dir, resume=True if args.resume else None, force=args.force)
        if cfg.eval.baseline and cfg.model.kind == "egan":
            # Same cohort, splits, backbone and freezing; only the objective differs.
            base = copy.deepcopy(cfg)
            base.name, base.model.kind, base.eval.baseline, base.eval.knn = f"{cfg.name}-baseline", "supervised", False, False
            base.eval.patchcore = False  # one-class detectors belong to the parent run's report
            base.eval.deploy = "auto"  # what is deployed is the parent run's choice
            train(base, os.path.join(run_dir, "baseline"), resume=True if args.resume else None, force=args.force)
        if int(os.environ.get("RANK", "0")) == 0:
            from egan_med.deploy.finalize import finalize_run
            finalize_run(run_dir)
            print(f"done: {run_dir}/report.md", file=sys.stderr)
    except (ConfigError, CohortError, RunDirError, WeightsError, BadImageError, CheckpointError) as exc:
        discard_unused_run_dirs()  # a refusal after the directory was made leaves nothing behind
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # 130 = 128 + SIGINT, the shell's convention; the last checkpoint is intact (atomic writes).
        print("\nerror: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        release_run_dirs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
