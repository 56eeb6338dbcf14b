"""nnU-Net's PlainConvUNet, built from a :class:`NetworkPlan` plus an optional per-layer width map.

Layers carry stable names so a pruned network can be rebuilt from its widths (``sauronnet.networks.topology``,
the one description of the structure):

- ``enc{s}.{i}``: conv block ``i`` of encoder stage ``s`` (conv → InstanceNorm → LeakyReLU);
- ``up{d}``: the transposed conv of decoder stage ``d`` (``d = 0`` is the deepest);
- ``dec{d}.{i}``: conv block ``i`` of decoder stage ``d``;
- ``head{d}``: the 1×1 segmentation conv of decoder stage ``d`` (never pruned: its outputs are the classes).

Every conv block and every transposed conv is prunable; :meth:`UNet.prunable_groups` names, for each one, the
modules that consume its channels and at which offset inside a concatenation — the pruning code never traces the
graph. Decoder concatenation order is ``cat([upsampled, skip])``, as in nnU-Net.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from sauronnet.networks.cpu_kernels import conv, instance_norm
from sauronnet.networks.topology import IMAGE, consumers, layers, prunable
from sauronnet.plans import NetworkPlan

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


class ConvBlock(nn.Module):
    """conv(kernel, stride, 'same' padding, bias) → InstanceNorm(eps 1e-5, affine) → LeakyReLU(0.01)."""

    def __init__(self, dim: int, c_in: int, c_out: int, kernel: tuple[int, ...], stride: tuple[int, ...]):
        super().__init__()
        self.conv = _CONV[dim](c_in, c_out, kernel, stride, padding=[k // 2 for k in kernel], bias=True)
        self.norm = _NORM[dim](c_out, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(instance_norm(conv(self.conv, x), self.norm))


@dataclass(frozen=True)
class Consumer:
    """A module reading a group's channels: its name and the first input channel they occupy."""

    module: str
    offset: int


@dataclass(frozen=True)
class PrunableGroup:
    """A prunable layer: the module producing the channels (a :class:`ConvBlock` or a transposed conv), its
    current width, and every consumer of those channels."""

    name: str
    width: int
    consumers: tuple[Consumer, ...]


def default_widths(plan: NetworkPlan) -> dict[str, int]:
    """The unpruned width of every prunable layer, in forward order."""
    return {layer.name: layer.planned for layer in prunable(plan)}


class UNet(nn.Module):
    """PlainConvUNet.

    Args:
        plan: the topology.
        in_channels: image channels.
        num_classes: output channels (background included).
        widths: per-layer widths (see :func:`default_widths`); missing layers take the plan's width.
        deep_supervision: return one output per decoder stage (highest resolution first) instead of only the
            highest-resolution one.

    Shapes: input ``(B, in_channels, *patch)`` (BCZYX or BCYX); output ``(B, num_classes, *patch)`` or a list of
    such with decreasing resolution.
    """

    def __init__(self, plan: NetworkPlan, in_channels: int, num_classes: int,
                 widths: Mapping[str, int] | None = None, deep_supervision: bool = True):
        super().__init__()
        self.plan, self.in_channels, self.num_classes = plan, in_channels, num_classes
        self.deep_supervision = deep_supervision
        w = {**default_widths(plan), **(widths or {})}
        unknown = sorted(set(w) - set(default_widths(plan)))
        if unknown:
            raise ValueError(f"width map names layers this network does not have: {unknown}")
        dim = plan.dim
        self.encoder, self.ups, self.decoder, self.heads = (nn.ModuleList() for _ in range(4))
        blocks: dict[str, list[list[nn.Module]]] = {"enc": [[] for _ in range(plan.n_stages)],
                                                    "dec": [[] for _ in range(plan.n_stages - 1)]}
        for layer in layers(plan):  # built in forward order, as nnU-Net does (the same initial weights)
            c_in = sum(in_channels if src == IMAGE else w[src] for src in layer.inputs)
            if layer.kind == "conv":
                stage = int(layer.name[3:].split(".")[0])
                blocks[layer.name[:3]][stage].append(ConvBlock(dim, c_in, w[layer.name], layer.kernel, layer.stride))
            elif layer.kind == "up":
                self.ups.append(_CONVT[dim](c_in, w[layer.name], layer.stride, layer.stride, bias=True))
            else:
                self.heads.append(_CONV[dim](c_in, num_classes, 1, 1, bias=True))
        self.encoder.extend(nn.Sequential(*b) for b in blocks["enc"])
        self.decoder.extend(nn.Sequential(*b) for b in blocks["dec"])
        self.apply(_he_init)

    # ---- structure -------------------------------------------------------------------------------------------
    def layer(self, name: str) -> nn.Module:
        """The module of a prunable layer: a :class:`ConvBlock` (``enc``/``dec``) or a transposed conv (``up``)."""
        if name.startswith("up"):
            return self.ups[int(name[2:])]
        if name.startswith("head"):
            return self.heads[int(name[4:])]
        if name[:3] not in ("enc", "dec") or "." not in name:
            raise KeyError(f"no layer named {name!r}")
        stage, block = name[3:].split(".")
        return (self.encoder if name.startswith("enc") else self.decoder)[int(stage)][int(block)]

    def widths(self) -> dict[str, int]:
        """Current width of every prunable layer (reflects pruning)."""
        out = {}
        for name in default_widths(self.plan):
            m = self.layer(name)
            out[name] = m.conv.out_channels if isinstance(m, ConvBlock) else m.out_channels
        return out

    def prunable_groups(self) -> list[PrunableGroup]:
        """Every prunable layer with its consumers and their channel offsets, from the *current* widths."""
        widths = self.widths()
        return [PrunableGroup(name, widths[name], tuple(Consumer(m, offset) for m, offset in readers))
                for name, readers in consumers(self.plan, widths).items()]

    # ---- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        outputs = []
        n_dec = len(self.decoder)
        for d in range(n_dec):
            x = self.ups[d](x)
            x = torch.cat((x, skips[-(d + 2)]), dim=1)
            x = self.decoder[d](x)
            if self.deep_supervision or d == n_dec - 1:
                outputs.append(self.heads[d](x))
        if not self.deep_supervision:
            return outputs[-1]
        return outputs[::-1]


def _he_init(module: nn.Module) -> None:
    """nnU-Net's InitWeights_He(1e-2): Kaiming-normal weights for LeakyReLU(0.01), zero biases."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_network(plan: NetworkPlan, in_channels: int, num_classes: int, widths: Mapping[str, int] | None = None,
                  deep_supervision: bool = True, seed: int | None = None) -> UNet:
    """The one way trainers and predictors construct a network.

    Args:
        seed: initialise the weights from this seed, without touching the global random state (None: draw them
            from the global random state, like any torch module).
    """
    if seed is None:
        return UNet(plan, in_channels, num_classes, widths, deep_supervision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet(plan, in_channels, num_classes, widths, deep_supervision)
