"""Multi-expert ResNet-32 for 32×32 images (BalPoE's backbone).

Stem and stage 1 are shared; each expert owns stages 2–3, a global average pool and a cosine
classifier. Module names follow the reference implementation (`backbone.layer2s.0...`), so weights
saved here load into its code and the other way round.

Under bf16 autocast the convolutions run in bf16, but the pooling and the classifier always run in
fp32: logits reach ±scale (30), where bf16's spacing is 0.125, too coarse for the τ·log π terms of
the loss and for calibration metrics. The head costs a (features × classes) product per expert.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """3×3 conv pair with an option-A shortcut: subsample by 2, zero-pad the new channels."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad_channels = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad_channels == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        half = self.pad_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad_channels - half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CosineClassifier(nn.Module):
    """Normalised features · normalised weight columns (the caller multiplies by the scale s)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        weight = torch.empty(in_features, num_classes).uniform_(-1, 1)
        self.weight = nn.Parameter(weight / weight.norm(dim=0, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ExpertResNet(nn.Module):
    def __init__(self, num_classes: int, num_experts: int, blocks: tuple[int, int, int] = (5, 5, 5),
                 use_norm: bool = True, scale: float = 30.0, reduce_dimension: bool = False):
        super().__init__()
        width2, width3 = (24, 48) if reduce_dimension else (32, 64)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _stage(16, 16, blocks[0], 1)
        self.layer2s = nn.ModuleList(_stage(16, width2, blocks[1], 2) for _ in range(num_experts))
        self.layer3s = nn.ModuleList(_stage(width2, width3, blocks[2], 2) for _ in range(num_experts))
        head = CosineClassifier if use_norm else nn.Linear
        self.linears = nn.ModuleList(head(width3, num_classes) for _ in range(num_experts))
        self.scale = scale if use_norm else 1.0
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-expert logits, shape (batch, experts, classes). The ensemble is their mean."""
        shared = self.layer1(F.relu(self.bn1(self.conv1(x))))
        logits = []
        for layer2, layer3, linear in zip(self.layer2s, self.layer3s, self.linears):
            features = layer3(layer2(shared)).float().mean(dim=(2, 3))
            with torch.autocast(x.device.type, enabled=False):  # fp32 head, whatever the caller's autocast
                logits.append(linear(features) * self.scale)
        return torch.stack(logits, dim=1)


class ResNet32Model(nn.Module):
    """The reference's wrapper name; holds the backbone under `backbone.`."""

    def __init__(self, num_classes: int, num_experts: int = 3, use_norm: bool = True, scale: float = 30.0,
                 reduce_dimension: bool = False):
        super().__init__()
        self.backbone = ExpertResNet(num_classes, num_experts, (5, 5, 5), use_norm, scale, reduce_dimension)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def build_model(config, num_classes: int) -> ResNet32Model:
    return ResNet32Model(num_classes, config.num_experts, config.use_norm, config.norm_scale,
                         config.reduce_dimension)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
