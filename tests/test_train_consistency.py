"""Training and scoring see the same network: BatchNorm batches, G's channels, float32 logits (issue 14: 1, 2, 5)."""
from __future__ import annotations

import copy
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import pytest
import torch

import egan_med.train as train_mod
from egan_med.config import ModelConfig, load_config
from egan_med.models import Discriminator, ScorePair
from conftest import build_tiny_cohort

# Lite0 untrained with its top 3 units trainable and BatchNorm in training mode: a non-empty frozen trunk
# (so the cached path differs from the uncached one) and train-mode BatchNorm where D learns.
TRAIN_BN = ModelConfig(discriminator="efficientnet_lite0", weights="none", trainable_blocks=3, train_bn=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> str:
    return build_tiny_cohort(tmp_path_factory.mktemp("cohort") / "tiny", train=(4, 32), val=(10, 10),
                             test=(10, 10))


def _train(cohort: str, out: Path, *extra: str) -> int:
    return train_mod.main(["configs/demo.yaml", f"data.cohort={cohort}", "train.epochs=1", "train.batch_size=16",
                           "train.max_steps_per_epoch=1", "eval.bootstrap=0", "eval.baseline=false", "eval.knn=false",
                           "data.augment=false", *extra, "--out", str(out)])


def test_score_pair_is_d_on_one_mixed_batch():
    torch.manual_seed(0)
    D = Discriminator(TRAIN_BN).train()
    real, neg = torch.rand(4, 3, 32, 32), 0.5 * torch.rand(3, 3, 32, 32)
    torch.manual_seed(1)
    expected = copy.deepcopy(D)(torch.cat([real, neg]))  # what eval-free scoring of the mixed batch gives
    for cached in (False, True):
        torch.manual_seed(1)  # same dropout mask
        r = D.backbone.features_trunk(real) if cached else real
        got = ScorePair(copy.deepcopy(D))(r, neg, cached)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["egan", "supervised"])
def test_only_the_d_step_moves_d_batchnorm_and_on_a_mixed_batch(cohort, tmp_path, monkeypatch, kind):
    calls: list[tuple[int, bool]] = []  # (batch size, running_mean moved) for each train-mode BN forward of D
    build = train_mod.build_networks

    def spy(cfg):
        nets = build(cfg)
        bn = next(m for m in (nets.get("D") or nets["C"]).modules() if isinstance(m, torch.nn.BatchNorm2d))
        before = {}
        bn.register_forward_pre_hook(lambda m, a: before.update(mean=m.running_mean.clone()))
        bn.register_forward_hook(lambda m, a, o: calls.append((a[0].shape[0], not torch.equal(before["mean"], m.running_mean)))
                                 if m.training else None)
        return nets

    monkeypatch.setattr(train_mod, "build_networks", spy)
    assert _train(cohort, tmp_path / kind, "model.weights=none", f"model.kind={kind}") == 0
    # one step: 16 real majority + 4 negatives (generated for eGAN, real minority for the baseline), one batch
    assert calls == [(16 + 4, True)]


def test_radiograph_generator_makes_equal_channels_and_channels_1_matches():
    cfg = load_config("configs/demo.yaml", ["model.weights=none", "data.kind=radiograph"])
    G = train_mod.build_networks(cfg)["G"]
    fake = G(torch.randn(5, cfg.model.latent_dim))
    assert fake.shape[1] == 3 and torch.equal(fake[:, 0], fake[:, 1]) and torch.equal(fake[:, 0], fake[:, 2])
    gray = load_config("configs/demo.yaml", ["model.weights=none", "data.kind=radiograph", "data.channels=1"])
    assert train_mod.build_networks(gray)["G"](torch.randn(2, cfg.model.latent_dim)).shape[1] == 1
    natural = load_config("configs/demo.yaml", ["model.weights=none", "data.kind=natural"])
    colour = train_mod.build_networks(natural)["G"](torch.randn(5, cfg.model.latent_dim))
    assert not torch.equal(colour[:, 0], colour[:, 1])


def test_reconstruction_loss_refuses_mismatched_shapes():
    from egan_med.models import reconstruction_loss

    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_loss(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8))
    assert reconstruction_loss(torch.ones(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)).item() == 1.0


def test_logits_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    D = Discriminator(TRAIN_BN).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = D(x)
        features = D.backbone(x).mean((2, 3))
    assert logits.dtype == torch.float32
    # the head itself in float32 on the (bf16) features: no bf16 rounding of the logits
    torch.testing.assert_close(logits, D.head(features.float()).squeeze(1), rtol=1e-6, atol=1e-6)


def test_feature_cache_matches_uncached_under_bf16_autocast(cohort, tmp_path, monkeypatch):
    # CPU stands in for CUDA: the training loop's and its step functions' autocast becomes CPU bf16 autocast.
    from egan_med.engine import steps

    cpu_bf16 = lambda device, enabled: torch.autocast("cpu", dtype=torch.bfloat16) if enabled else nullcontext()  # noqa: E731
    monkeypatch.setattr(train_mod, "autocast", cpu_bf16)
    monkeypatch.setattr(steps, "autocast", cpu_bf16)
    assert _train(cohort, tmp_path / "plain", "train.amp=true") == 0
    assert _train(cohort, tmp_path / "cached", "train.amp=true", "train.feature_cache=true") == 0
    a, b = pd.read_csv(tmp_path / "plain" / "metrics.csv"), pd.read_csv(tmp_path / "cached" / "metrics.csv")
    for col in ("loss_d", "loss_g", "val_auroc", "test_auroc"):
        assert abs(a[col].iloc[0] - b[col].iloc[0]) < 1e-5, col
