import glob

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from egan_med.config import ModelConfig
from egan_med.models import BACKBONES, Backbone, Discriminator, Encoder, Generator, WeightsError, count_parameters
from egan_med.models.backbones import _lite0_state_dict


def test_densenet121_discriminator_has_the_papers_39937_trainable_parameters():
    # weights=none with an explicit unit count keeps the paper's freezing without ImageNet files.
    d = Discriminator(ModelConfig(discriminator="densenet121", weights="none", trainable_blocks=2))
    assert count_parameters(d) == (6_954_881, 39_937)
    names = {n.split(".weight")[0].split(".bias")[0] for n, p in d.named_parameters() if p.requires_grad}
    assert any("conv2" in n for n in names) and "head" in names


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_forward_backward_every_backbone_at_32px(name):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=name, discriminator=name, weights="none", trainable_blocks=3, latent_dim=16)
    E, G, D = Encoder(cfg), Generator(16, 32), Discriminator(cfg)
    x = torch.rand(2, 3, 32, 32)
    fake = G(E(x))
    assert fake.shape == (2, 3, 32, 32) and 0 <= fake.min() and fake.max() <= 1
    loss = F.binary_cross_entropy_with_logits(D(fake), torch.ones(2))
    loss.backward()
    assert E.fc.weight.grad is not None and E.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in D.backbone.trunk.parameters())


def test_frozen_batchnorm_stays_in_inference_mode():
    d = Discriminator(ModelConfig(discriminator="efficientnet_lite0", weights="imagenet"))
    d.train()
    bns = [m for m in d.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    before = bns[0].running_mean.clone()
    d(torch.rand(4, 3, 32, 32))
    assert torch.equal(before, bns[0].running_mean)


def test_generator_sizes_follow_image_size():
    assert Generator(128, 64)(torch.zeros(1, 128)).shape == (1, 3, 64, 64)


def test_missing_imagenet_weights_offline_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    with pytest.raises(WeightsError, match=r"densenet121.*not in the hub cache.*model.weights="):
        Backbone("densenet121", "imagenet")


def test_weights_from_an_explicit_state_dict_file(tmp_path):
    net = torchvision.models.resnet101(weights=None)
    path = tmp_path / "r101.pth"
    torch.save(net.state_dict(), path)
    b = Backbone("resnet101", str(path))
    assert b.weights_source.startswith("file ")
    assert torch.equal(b.trunk[0][0].weight, net.conv1.weight)
    with pytest.raises(WeightsError, match="not found"):
        Backbone("resnet101", str(tmp_path / "nope.pth"))


def test_lite0_imagenet_weights_load_offline_and_recognise_aircraft(data_root):
    """Aircraft classes land in the top-5 of real CIFAR airplanes, far more than of automobiles."""
    cats = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.meta["categories"]
    aircraft = {"airliner", "warplane", "wing", "airship", "space shuttle", "aircraft carrier", "projectile", "missile"}
    b = Backbone("efficientnet_lite0", "imagenet").eval()
    sd = _lite0_state_dict()
    fc = torch.nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": sd["_fc.weight"], "bias": sd["_fc.bias"]})
    hit_rate = {}
    for cls in ("airplane", "automobile"):
        files = sorted(glob.glob(str(data_root / f"cifar10_airplane_automobile/test/{cls}/*.jpg")))[:48]
        x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]).float() / 255
        x = F.interpolate(x, size=96, mode="bicubic", align_corners=False).clamp(0, 1)
        with torch.no_grad():
            top5 = fc(b(x).mean((2, 3))).topk(5, 1).indices.tolist()
        hit_rate[cls] = np.mean([any(cats[i] in aircraft for i in row) for row in top5])
    assert hit_rate["airplane"] >= 0.4
    assert hit_rate["airplane"] >= 4 * hit_rate["automobile"]
