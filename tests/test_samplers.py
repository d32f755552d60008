"""DDP sharding: equal steps and equal slices on every rank, for any dataset size; real gloo runs finish."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from egan_med.data.samplers import BatchShardSampler
from conftest import build_tiny_cohort

REPO = Path(__file__).resolve().parents[1]


class _Sized:
    """The two things the sampler reads from a dataset: its length and its epoch."""

    def __init__(self, n: int, epoch: int = 0) -> None:
        self.n, self.epoch = n, epoch

    def __len__(self) -> int:
        return self.n


def _steps(sampler: BatchShardSampler, per_rank_batch: int) -> list[list[int]]:
    """The batches a DataLoader(batch_size=per_rank_batch, sampler=sampler, drop_last=False) yields."""
    idx = list(sampler)
    assert len(idx) == len(sampler)
    return [idx[i:i + per_rank_batch] for i in range(0, len(idx), per_rank_batch)]


@pytest.mark.parametrize("world", range(1, 9))
def test_every_rank_takes_equal_steps_of_equal_slices(world):
    for n in list(range(0, 41)) + [97, 128, 131]:
        for batch in (world, 2 * world, 3 * world, 8 * world):
            ranks = [_steps(BatchShardSampler(_Sized(n), 7, batch, r, world), batch // world) for r in range(world)]
            assert len({len(s) for s in ranks}) == 1, (n, batch, world, [len(s) for s in ranks])
            for step in zip(*ranks):  # the same slice size on every rank at every step
                assert len({len(part) for part in step}) == 1, (n, batch, world, step)
            seen = [i for s in ranks for part in s for i in part]
            assert len(seen) == len(set(seen)), (n, batch, world)  # dropped, never padded: no repeats
            assert n - len(seen) == (n % batch) % world, (n, batch, world)  # at most world-1 left out
            # Full global batches are exactly the single-process ones.
            single = [p for s in [_steps(BatchShardSampler(_Sized(n), 7, batch, 0, 1), batch)] for p in s]
            for k, step in enumerate(zip(*ranks)):
                glued = [i for part in step for i in part]
                assert glued == single[k][:len(glued)], (n, batch, world, k)


def test_the_issue_example_five_leftover_over_four_ranks():
    # 13 images, global batch 8: a last batch of 5 over 4 ranks once split 2, 2, 1, 0 (steps [2, 2, 2, 1]).
    ranks = [_steps(BatchShardSampler(_Sized(13), 0, 8, r, 4), 2) for r in range(4)]
    assert [len(s) for s in ranks] == [2, 2, 2, 2]
    assert [len(s[-1]) for s in ranks] == [1, 1, 1, 1]


@pytest.fixture(scope="module")
def cohort70(tmp_path_factory) -> str:
    """70 training majority images: an awkward remainder for 3 and for 4 processes."""
    return build_tiny_cohort(tmp_path_factory.mktemp("cohort") / "c70", train=(4, 70), val=(10, 10),
                             test=(10, 10))


@pytest.mark.slow
@pytest.mark.parametrize("world,batch", [(3, 6), (4, 16)])
def test_torchrun_with_an_awkward_remainder_finishes(cohort70, tmp_path, world, batch):
    """70 = 11*6 + 4 over 3 ranks, 70 = 4*16 + 6 over 4 ranks: once a rank took a step fewer and DDP hung."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
           "-m", "egan_med.train", "configs/demo.yaml", f"data.cohort={cohort70}", "train.epochs=1",
           f"train.batch_size={batch}", "train.max_steps_per_epoch=0", "eval.bootstrap=20", "eval.baseline=false",
           "eval.knn=false", "data.augment=false", "--out", str(out)]
    log = tmp_path / "torchrun.log"  # a file, not a pipe: hung workers would hold a pipe open forever
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            # SIGTERM makes torchrun stop its workers (each runs in its own session, out of reach of killpg).
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            pytest.fail(f"{world}-process run hung (stopped after 300 s)")
    assert proc.returncode == 0, log.read_text()[-2000:]
    history = pd.read_csv(out / "metrics.csv")
    assert list(history.epoch) == [0] and history.loss_d.notna().all()
