"""ResNet-50 v1.5 with torchvision's state_dict names, so weights load strictly in both directions."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

ConvInit = Literal["fan_in", "fan_out"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # v1.5: the stride sits on the 3x3 conv, not on the first 1x1 as in v1.
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def zero_init_last(self) -> None:
        """Start each residual branch as identity (gamma of the last BN = 0)."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_stage(in_channels: int, width: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    layers = [Bottleneck(in_channels, width, stride)]
    out_channels = width * Bottleneck.expansion
    layers += [Bottleneck(out_channels, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers), out_channels


class ResNet(nn.Module):
    def __init__(
        self,
        layers: tuple[int, ...] = (3, 4, 6, 3),
        num_classes: int = 1000,
        conv_init: ConvInit = "fan_in",
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if conv_init not in ("fan_in", "fan_out"):
            raise ValueError(f"conv_init must be 'fan_in' or 'fan_out', got {conv_init!r}")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        self.layer1, channels = make_stage(channels, 64, layers[0], stride=1)
        self.layer2, channels = make_stage(channels, 128, layers[1], stride=2)
        self.layer3, channels = make_stage(channels, 256, layers[2], stride=2)
        self.layer4, channels = make_stage(channels, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.reset_parameters(conv_init, zero_init_last)

    def reset_parameters(self, conv_init: ConvInit = "fan_in", zero_init_last: bool = False) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=conv_init, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    m.zero_init_last()

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes: int = 1000, conv_init: ConvInit = "fan_in", zero_init_last: bool = False) -> ResNet:
    """ResNet-50 v1.5 (25,557,032 parameters at 1000 classes)."""
    return ResNet((3, 4, 6, 3), num_classes=num_classes, conv_init=conv_init, zero_init_last=zero_init_last)
