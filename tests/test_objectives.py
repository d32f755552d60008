"""Each training option changes what it says it changes: the objectives and step functions on tiny networks,
and checkpoint_every / channels_last on a tiny training run."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from egan_med.config import ModelConfig, TrainConfig
from egan_med.engine import steps
from egan_med.engine.steps import StepBatch, StepNets, egan_step, supervised_step
from egan_med.models import objectives as obj
from egan_med.models.egan import Discriminator
from conftest import build_tiny_cohort



class TinyD(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 1)

    def forward(self, x, from_trunk=False):
        return self.head(torch.tanh(self.conv(x)).mean((2, 3))).squeeze(1)


class TinyEG(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3 * 8 * 8)

    def forward(self, trunk, from_trunk=True):
        return torch.sigmoid(self.lin(trunk)).view(-1, 3, 8, 8)


def _setup(seen: list | None = None):
    torch.manual_seed(0)
    D, EG = TinyD(), TinyEG()

    def pair(real, neg, cached=False):
        if seen is not None:
            seen.append((real.detach().clone(), neg.detach().clone()))
        return D(torch.cat([real, neg]))

    nets = StepNets(D, pair, torch.optim.SGD(D.parameters(), lr=0.1), EG, EG, D, torch.optim.SGD(EG.parameters(), lr=0.1))
    batch = StepBatch(torch.rand(6, 3, 8, 8), 6, torch.rand(2, 3, 8, 8), torch.rand(2, 6))
    return nets, batch


def _train_cfg(**kw) -> TrainConfig:
    return TrainConfig(amp=False, **kw)


def _egan_losses(**kw):
    nets, batch = _setup()
    torch.manual_seed(1)
    return egan_step(_train_cfg(**kw), nets, batch), nets, batch


def test_paper_d_loss_is_the_two_bce_means():
    logits, n = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0]), 2
    expected = F.binary_cross_entropy_with_logits(logits[:2], torch.ones(2)) + \
        F.binary_cross_entropy_with_logits(logits[2:], torch.zeros(3))
    assert obj.paper_d_loss(logits, n) == pytest.approx(float(expected))


def test_label_smoothing_lowers_the_real_target():
    logits = torch.tensor([6.0, 6.0, -6.0])  # D is sure: smoothing must penalise that sureness
    plain, smooth = obj.paper_d_loss(logits, 2, obj.real_target(0.0)), obj.paper_d_loss(logits, 2, obj.real_target(0.2))
    expected = F.binary_cross_entropy_with_logits(logits[:2], torch.full((2,), 0.8)) + \
        F.binary_cross_entropy_with_logits(logits[2:], torch.zeros(1))
    assert float(smooth) == pytest.approx(float(expected)) and float(smooth) > float(plain) + 0.5
    (with_ls, _, _), (without, _, _) = _egan_losses(label_smoothing=0.2), _egan_losses()
    assert float(with_ls[0]) != pytest.approx(float(without[0]))  # the step passes it on


def test_semi_supervised_adds_the_real_minority_to_d_negatives():
    for semi, n_neg in ((False, 2), (True, 4)):
        seen: list = []
        nets, batch = _setup(seen)
        egan_step(_train_cfg(semi_supervised=semi), nets, batch)
        real, neg = seen[0]
        assert len(real) == 6 and len(neg) == n_neg
        if semi:
            assert torch.equal(neg[2:], batch.x_min)


def test_instance_noise_perturbs_both_sides_within_range():
    for std in (0.0, 0.1):
        seen: list = []
        nets, batch = _setup(seen)
        fake = nets.EG(batch.min_trunk).detach()
        egan_step(_train_cfg(instance_noise=std), nets, batch)
        real, neg = seen[0]
        moved_real, moved_neg = (real - batch.real).abs().mean(), (neg - fake).abs().mean()
        if std == 0:
            assert moved_real == 0 and moved_neg == 0
        else:
            assert 0.02 < moved_real < 0.1 and 0.02 < moved_neg < 0.1
            assert real.min() >= 0 and real.max() <= 1 and neg.min() >= 0 and neg.max() <= 1


def test_r1_adds_exactly_the_gradient_penalty():
    nets, batch = _setup()
    x = batch.real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nets.D(x).sum(), x)
    expected = 0.5 * 10.0 * float(grad.pow(2).flatten(1).sum(1).mean())
    assert float(obj.r1_penalty(nets.D, batch.real, 10.0).detach()) == pytest.approx(expected, rel=1e-5)
    (with_r1, _, _), (without, _, _) = _egan_losses(r1_gamma=10.0), _egan_losses()
    assert float(with_r1[0] - without[0]) == pytest.approx(expected, rel=1e-4)
    assert float(with_r1[1]) != float(without[1])  # D moved differently, so G's loss differs too


def test_reconstruction_adds_weighted_mse_to_g():
    nets, batch = _setup()
    fake = nets.EG(batch.min_trunk)
    assert float(obj.reconstruction_loss(fake, batch.x_min).detach()) == pytest.approx(
        float(F.mse_loss(fake, batch.x_min).detach()))
    (with_recon, _, _), (without, _, _) = _egan_losses(recon_weight=2.0), _egan_losses()
    assert float(with_recon[0]) == float(without[0]) and float(with_recon[1]) > float(without[1])


def test_class_weight_balances_the_classes():
    logits = torch.tensor([3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 1.0])  # six majority, one badly scored minority
    per = F.binary_cross_entropy_with_logits(logits, torch.tensor([1.0] * 6 + [0.0]), reduction="none")
    weighted, plain = obj.supervised_loss(logits, 6, True), obj.supervised_loss(logits, 6, False)
    assert float(weighted) == pytest.approx(0.5 * float(per[:6].mean() + per[6]))
    assert float(plain) == pytest.approx(float(per.mean())) and float(weighted) > 2 * float(plain)
    nets, batch = _setup()
    loss = supervised_step(_train_cfg(class_weight=True), nets, batch)
    assert float(loss[1]) == 0.0 and float(loss[0]) > 0


def test_steps_update_only_their_networks():
    nets, batch = _setup()
    before = copy.deepcopy((nets.D.state_dict(), nets.EG.state_dict()))
    supervised_step(_train_cfg(), nets, batch)
    assert not torch.equal(before[0]["head.weight"], nets.D.head.weight)
    assert torch.equal(before[1]["lin.weight"], nets.EG.lin.weight)


def test_spectral_norm_bounds_the_head():
    torch.manual_seed(0)
    cfg = ModelConfig(discriminator="efficientnet_lite0", weights="none", spectral_norm=True)
    D = Discriminator(cfg).train()
    with torch.no_grad():
        D.head.parametrizations.weight.original.mul_(50.0)  # a large raw weight ...
        for _ in range(20):  # ... power iterations run in training-mode forwards
            D(torch.rand(2, 3, 32, 32))
    assert float(torch.linalg.matrix_norm(D.head.weight.detach(), ord=2)) == pytest.approx(1.0, rel=0.05)
    plain = Discriminator(ModelConfig(discriminator="efficientnet_lite0", weights="none"))
    assert not hasattr(plain.head, "parametrizations")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> str:
    return build_tiny_cohort(tmp_path_factory.mktemp("cohort") / "c", train=(4, 16), val=(4, 4),
                             test=(4, 4))


def _run(cohort: str, out: Path, *extra: str) -> int:
    from egan_med.train import main

    return main(["configs/demo.yaml", f"data.cohort={cohort}", "train.epochs=3", "train.batch_size=8",
                 "train.max_steps_per_epoch=1", "eval.bootstrap=0", "eval.baseline=false", "eval.knn=false",
                 "data.augment=false", *extra, "--threads", "1", "--out", str(out)])


def test_checkpoint_every_and_channels_last(cohort, tmp_path, monkeypatch):
    from egan_med import train

    saved: list[tuple[str, int]] = []
    layouts: list[bool] = []
    save = train.save_checkpoint
    monkeypatch.setattr(train, "save_checkpoint",
                        lambda state, path, **kw: (saved.append((Path(path).name, state["epoch"])), save(state, path, **kw)))
    real_step = steps.STEPS["egan"]

    def spy(t, n, b):
        layouts.append(b.real.is_contiguous(memory_format=torch.channels_last) and
                       n.D.head.weight is not None and
                       next(m for m in n.D.modules() if isinstance(m, nn.Conv2d)).weight.is_contiguous(
                           memory_format=torch.channels_last))
        return real_step(t, n, b)

    monkeypatch.setitem(steps.STEPS, "egan", spy)
    assert _run(cohort, tmp_path / "a", "train.checkpoint_every=2", "train.channels_last=true") == 0
    assert [e for name, e in saved if name == "last.pt"] == [1, 2]  # every 2nd epoch, and the last
    assert layouts == [True] * 3
    saved.clear()
    layouts.clear()
    assert _run(cohort, tmp_path / "b", "train.checkpoint_every=1", "train.channels_last=false") == 0
    assert [e for name, e in saved if name == "last.pt"] == [0, 1, 2]
    assert layouts == [False] * 3
