"""End-to-end training on the bundled real PneumoniaMNIST: run directory, determinism, resume after SIGKILL, DDP."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from egan_med.train import main as train_main
from conftest import build_tiny_cohort

REPO = Path(__file__).resolve().parents[1]
# Small but real: 64 majority + 4 minority in train, 30 + 30 in val and test, 32 px, offline Lite0.
TINY = ["train.epochs=2", "train.batch_size=32", "train.max_steps_per_epoch=2", "eval.bootstrap=50",
        "eval.baseline=false", "eval.knn=false", "data.augment=true"]


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> str:
    return build_tiny_cohort(tmp_path_factory.mktemp("cohort") / "tiny", train=(4, 64), val=(30, 30),
                             test=(30, 30))


TIMING = ["seconds", "train_seconds", "train_images_per_s"]


def _run(cohort: str, out: Path, *extra: str) -> int:
    return train_main(["configs/demo.yaml", f"data.cohort={cohort}", *TINY, *extra, "--out", str(out)])


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    assert _run(tiny_cohort, out) == 0
    return out


def test_run_directory_has_every_file(tiny_run):
    for name in ("config.yaml", "metrics.csv", "report.md", "report.json", "report.csv", "checkpoints/last.pt",
                 "checkpoints/best.pt", "augmentations.png", "correct_counts.png", "losses.png", "roc_pr_test.png",
                 "operating_point.json"):
        assert (tiny_run / name).is_file(), name
    history = pd.read_csv(tiny_run / "metrics.csv")
    assert list(history.epoch) == [0, 1]
    for col in ("loss_d", "loss_g", "val_auroc", "test_precision", "test_recall", "test_f1", "test_correct_minority",
                "test_correct_majority", "test_nash"):
        assert col in history.columns and history[col].notna().all(), col
    report = (tiny_run / "report.md").read_text()
    for row in ("eGAN", "optimistic (paper protocol)", "all minority", "all majority"):
        assert row in report
    import json

    rows = json.loads((tiny_run / "report.json").read_text())["rows"]
    columns = {"model", "train_minority", "train_majority", "test_minority", "test_majority", "ratio", "operating_point",
               "threshold", "precision", "recall", "specificity", "f1", "balanced_accuracy", "auroc", "auprc",
               "sens_at_spec", "auroc_lo", "auroc_hi", "recall_lo", "recall_hi"}
    for r in rows:
        assert columns <= set(r), columns - set(r)
    assert rows[0]["train_minority"] == 4 and rows[0]["test_minority"] == 30


def test_tensorboard_events_are_readable(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run / "tb"))
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss_d", "train/loss_g", "val/auroc", "test/correct_minority"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/loss_d")] == [0, 1]
    assert "train/generated" in tags["images"] and "data/augmented_real" in tags["images"]
    assert "test/pr_curve" in tags["tensors"]


def test_same_seed_same_metrics(tiny_cohort, tiny_run, tmp_path):
    assert _run(tiny_cohort, tmp_path / "b") == 0
    a = pd.read_csv(tiny_run / "metrics.csv").drop(columns=TIMING)
    b = pd.read_csv(tmp_path / "b" / "metrics.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(a, b)


def test_dry_run_prints_sizes_and_parameters(tiny_cohort, capsys, tmp_path):
    assert train_main(["configs/demo.yaml", f"data.cohort={tiny_cohort}", "--dry-run", "--out", str(tmp_path / "x")]) == 0
    err = capsys.readouterr().err
    assert "train: 4 minority / 64 majority" in err and "D: 3,372,289 parameters, 413,441 trainable" in err
    assert not (tmp_path / "x").exists()


def test_threads_option_sets_torch_threads_and_rejects_negatives(tiny_cohort, capsys, tmp_path):
    before = torch.get_num_threads()
    try:
        args = ["configs/demo.yaml", f"data.cohort={tiny_cohort}", "--dry-run", "--out", str(tmp_path / "x")]
        assert train_main([*args, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert train_main([*args, "--threads", "-1"]) == 2
        assert "--threads must be >= 0" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_other_configs_run_dir_is_not_overwritten(tiny_cohort, tiny_run, capsys):
    assert _run(tiny_cohort, tiny_run, "train.lr_d=0.001") == 2
    assert "different config" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(tiny_cohort, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "egan_med.train", "configs/demo.yaml", f"data.cohort={tiny_cohort}", *TINY,
           "--out", str(out)]
    # The reference runs uninterrupted in a fresh process too, so both see the same process-wide torch state.
    subprocess.run([*cmd[:-1], str(tmp_path / "reference")], cwd=REPO, check=True, capture_output=True)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    # Kill as soon as epoch 0 is checkpointed, i.e. during epoch 1.
    while not (out / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert len(pd.read_csv(out / "metrics.csv")) == 1
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)  # same config, same directory: resumes
    a = pd.read_csv(tmp_path / "reference" / "metrics.csv").drop(columns=TIMING)
    b = pd.read_csv(out / "metrics.csv").drop(columns=TIMING)
    # Counts must match exactly; floats to 1e-4 (the killed run was another process: thread counts may
    # differ, and with them the order of float sums).
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss_d")] == [0, 1]  # no duplicate points after resume


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny_cohort, tmp_path):
    """DDP on gloo, 2 CPU processes. Dropout off: its masks are drawn per process, the rest is exact."""
    extra = ["model.dropout=0", "train.epochs=1", "data.augment=false"]
    single, double = tmp_path / "one", tmp_path / "two"
    assert _run(tiny_cohort, single, *extra) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "egan_med.train",
           "configs/demo.yaml", f"data.cohort={tiny_cohort}", *TINY, *extra, "--out", str(double)]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    a = pd.read_csv(single / "metrics.csv")
    b = pd.read_csv(double / "metrics.csv")
    for col in ("loss_d", "loss_g", "val_auroc", "test_auroc"):
        assert abs(a[col].iloc[-1] - b[col].iloc[-1]) < 1e-3, col  # stated tolerance: 1e-3
    assert (a.test_correct_minority == b.test_correct_minority).all()


def test_feature_cache_matches_the_uncached_path(tiny_cohort, tmp_path):
    extra = ["data.augment=false", "train.epochs=1"]
    assert _run(tiny_cohort, tmp_path / "plain", *extra) == 0
    assert _run(tiny_cohort, tmp_path / "cached", *extra, "train.feature_cache=true") == 0
    a = pd.read_csv(tmp_path / "plain" / "metrics.csv")
    b = pd.read_csv(tmp_path / "cached" / "metrics.csv")
    for col in ("loss_d", "loss_g", "val_auroc", "test_auroc", "test_f1"):
        assert abs(a[col].iloc[0] - b[col].iloc[0]) < 1e-4, col
