"""OSNet and OSNet-AIN (Zhou et al., ICCV 2019; TPAMI 2021) in PyTorch.

Module and attribute names follow torchreid 0.2.5 (``models/osnet.py`` and
``models/osnet_ain.py``) exactly, so torchreid checkpoints load key for key.
Three variants share the building blocks below:

* ``osnet``: plain OSNet (Table 1 of the paper).
* ``ibn``:   OSNet-IBN, instance norm in conv1 and at the output of the conv2 blocks.
* ``ain``:   OSNet-AIN, instance norm inside chosen residual branches (the
  architecture torchreid found by neural architecture search).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..sizes import BASE_CHANNELS, scaled_channels  # noqa: F401  (torch-free, re-exported)

FEATURE_DIM = 512
VARIANTS = ("osnet", "ibn", "ain")


class ConvLayer(nn.Module):
    """Convolution + BatchNorm (or affine InstanceNorm) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, IN: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=False, groups=groups)
        self.bn = nn.InstanceNorm2d(out_channels, affine=True) if IN else nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(nn.Module):
    """1x1 convolution + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, padding=0,
                              bias=False, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1Linear(nn.Module):
    """1x1 convolution + BN, no activation (the linear projection of a bottleneck)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(out_channels) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.bn is None else self.bn(x)


class LightConv3x3(nn.Module):
    """Lite 3x3 layer (paper Fig. 3c): pointwise 1x1, then depthwise 3x3, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False,
                               groups=out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class LightConvStream(nn.Module):
    """A stream of ``depth`` Lite 3x3 layers (OSNet-AIN naming)."""

    def __init__(self, in_channels: int, out_channels: int, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"stream depth must be >= 1, got {depth}")
        layers = [LightConv3x3(in_channels, out_channels)]
        layers += [LightConv3x3(out_channels, out_channels) for _ in range(depth - 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ChannelGate(nn.Module):
    """Unified aggregation gate (paper Eq. 3): GAP -> FC/16 -> ReLU -> FC -> sigmoid, x * g.

    One instance is shared by all streams of a block: that sharing is what makes the
    aggregation "unified" and keeps the parameter count down.
    """

    def __init__(self, in_channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(in_channels, in_channels // reduction, kernel_size=1, bias=True, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(in_channels // reduction, in_channels, kernel_size=1, bias=True, padding=0)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.global_avgpool(x)
        g = self.relu(self.fc1(g))
        g = self.gate_activation(self.fc2(g))
        return x * g


class OSBlock(nn.Module):
    """Omni-scale residual bottleneck of OSNet / OSNet-IBN (paper Fig. 4b), T = 4 streams.

    ``IN=True`` (OSNet-IBN) applies an affine InstanceNorm to the block output, after the
    residual sum and before the final ReLU, as torchreid does.
    """

    def __init__(self, in_channels: int, out_channels: int, IN: bool = False,
                 bottleneck_reduction: int = 4) -> None:
        super().__init__()
        mid_channels = out_channels // bottleneck_reduction
        self.conv1 = Conv1x1(in_channels, mid_channels)
        self.conv2a = LightConv3x3(mid_channels, mid_channels)
        self.conv2b = nn.Sequential(*[LightConv3x3(mid_channels, mid_channels) for _ in range(2)])
        self.conv2c = nn.Sequential(*[LightConv3x3(mid_channels, mid_channels) for _ in range(3)])
        self.conv2d = nn.Sequential(*[LightConv3x3(mid_channels, mid_channels) for _ in range(4)])
        self.gate = ChannelGate(mid_channels)
        self.conv3 = Conv1x1Linear(mid_channels, out_channels)
        self.downsample = Conv1x1Linear(in_channels, out_channels) if in_channels != out_channels else None
        self.IN = nn.InstanceNorm2d(out_channels, affine=True) if IN else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        x1 = self.conv1(x)
        x2 = (self.gate(self.conv2a(x1)) + self.gate(self.conv2b(x1))
              + self.gate(self.conv2c(x1)) + self.gate(self.conv2d(x1)))
        out = self.conv3(x2) + identity
        if self.IN is not None:
            out = self.IN(out)
        return F.relu(out)


class OSBlockAIN(nn.Module):
    """OSNet-AIN block; ``instance_norm=True`` is torchreid's ``OSBlockINin``.

    With instance norm the residual branch ends with conv3 (no BN) -> InstanceNorm, then
    the residual sum, as in torchreid's osnet_ain.py.
    """

    def __init__(self, in_channels: int, out_channels: int, instance_norm: bool,
                 reduction: int = 4, T: int = 4) -> None:
        super().__init__()
        if out_channels < reduction or out_channels % reduction:
            raise ValueError(f"out_channels={out_channels} must be a multiple of {reduction}")
        mid_channels = out_channels // reduction
        self.conv1 = Conv1x1(in_channels, mid_channels)
        self.conv2 = nn.ModuleList(LightConvStream(mid_channels, mid_channels, t) for t in range(1, T + 1))
        self.gate = ChannelGate(mid_channels)
        self.conv3 = Conv1x1Linear(mid_channels, out_channels, bn=not instance_norm)
        self.downsample = Conv1x1Linear(in_channels, out_channels) if in_channels != out_channels else None
        self.IN = nn.InstanceNorm2d(out_channels, affine=True) if instance_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        x1 = self.conv1(x)
        x2 = 0
        for stream in self.conv2:
            x2 = x2 + self.gate(stream(x1))
        x3 = self.conv3(x2)
        if self.IN is not None:
            x3 = self.IN(x3)
        return F.relu(x3 + identity)


# Which OSNet-AIN blocks carry instance norm (torchreid osnet_ain_x*: conv2, conv3, conv4).
AIN_BLOCK_IN = ((True, True), (False, True), (True, False))


class OSNet(nn.Module):
    """OSNet feature extractor (+ optional classifier). Eval-mode forward -> (N, 512)."""

    def __init__(self, width: float = 1.0, variant: str = "osnet", num_classes: int = 0,
                 feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        c = scaled_channels(width)
        self.width, self.variant, self.feature_dim = float(width), variant, feature_dim
        self.channels = c
        if variant == "ain":
            self.conv1 = ConvLayer(3, c[0], 7, stride=2, padding=3, IN=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.conv2 = self._ain_stage(c[0], c[1], AIN_BLOCK_IN[0])
            self.pool2 = nn.Sequential(Conv1x1(c[1], c[1]), nn.AvgPool2d(2, stride=2))
            self.conv3 = self._ain_stage(c[1], c[2], AIN_BLOCK_IN[1])
            self.pool3 = nn.Sequential(Conv1x1(c[2], c[2]), nn.AvgPool2d(2, stride=2))
            self.conv4 = self._ain_stage(c[2], c[3], AIN_BLOCK_IN[2])
        else:
            ibn = variant == "ibn"
            self.conv1 = ConvLayer(3, c[0], 7, stride=2, padding=3, IN=ibn)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.conv2 = self._stage(c[0], c[1], transition=True, IN=ibn)
            self.conv3 = self._stage(c[1], c[2], transition=True)
            self.conv4 = self._stage(c[2], c[3], transition=False)
        self.conv5 = Conv1x1(c[3], c[3])
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c[3], feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(feature_dim, num_classes) if num_classes else None
        self._init_params()

    @staticmethod
    def _stage(cin: int, cout: int, transition: bool, IN: bool = False) -> nn.Sequential:
        layers: list[nn.Module] = [OSBlock(cin, cout, IN=IN), OSBlock(cout, cout, IN=IN)]
        if transition:  # transition layer: 1x1 conv + 2x2 average pool (Table 1)
            layers.append(nn.Sequential(Conv1x1(cout, cout), nn.AvgPool2d(2, stride=2)))
        return nn.Sequential(*layers)

    @staticmethod
    def _ain_stage(cin: int, cout: int, instance_norm: Sequence[bool]) -> nn.Sequential:
        blocks = [OSBlockAIN(cin, cout, instance_norm[0])]
        blocks += [OSBlockAIN(cout, cout, flag) for flag in instance_norm[1:]]
        return nn.Sequential(*blocks)

    def _init_params(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.InstanceNorm2d)):
                if m.weight is not None:
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def featuremaps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv2(x)
        if self.variant == "ain":
            x = self.pool2(x)
        x = self.conv3(x)
        if self.variant == "ain":
            x = self.pool3(x)
        x = self.conv4(x)
        return self.conv5(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.global_avgpool(self.featuremaps(x)).flatten(1)
        v = self.fc(v)
        if not self.training or self.classifier is None:
            return v
        return self.classifier(v)
