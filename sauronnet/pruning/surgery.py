"""Physically removing output channels of a prunable layer and the matching inputs of its consumers.

Every ``nn.Parameter`` object is kept (only its ``.data`` is replaced under ``no_grad``), so optimizer param
groups stay valid; each change is reported as a :class:`Slice` so :mod:`sauronnet.pruning.optim_state` can cut
the optimizer state the same way.

- producer conv: weight dim 0 and bias; its affine InstanceNorm: weight, bias (and running stats if tracked);
- producer transposed conv: weight dim 1 and bias;
- consumer conv (blocks and heads): weight dim 1 at the group's offset inside a concatenation;
- consumer transposed conv: weight dim 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sauronnet.networks.unet import ConvBlock, PrunableGroup, UNet

_CONVT = (nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class Slice:
    """``param`` was cut to ``index`` along ``dim``; it had ``old_shape`` before."""

    param: nn.Parameter
    dim: int
    index: torch.Tensor
    old_shape: tuple[int, ...]


@torch.no_grad()
def _cut(param: nn.Parameter | None, dim: int, index: torch.Tensor, out: list[Slice]) -> None:
    if param is None:
        return
    index = index.to(param.device)
    old = tuple(param.shape)
    param.data = param.data.index_select(dim, index).contiguous()
    if param.grad is not None:
        param.grad = param.grad.index_select(dim, index).contiguous()
    out.append(Slice(param, dim, index, old))


def _cut_buffer(module: nn.Module, name: str, index: torch.Tensor) -> None:
    buf = getattr(module, name, None)
    if isinstance(buf, torch.Tensor) and buf.ndim == 1:
        setattr(module, name, buf.index_select(0, index.to(buf.device)))


def remove_channels(net: UNet, group: PrunableGroup, keep: torch.Tensor) -> list[Slice]:
    """Keeps only output channels ``keep`` (sorted, unique indices) of ``group``; returns every parameter cut.

    Args:
        group: from ``net.prunable_groups()`` computed on the *current* network (offsets depend on widths).
        keep: int64 indices into the group's current channels, at least one.
    """
    keep = torch.as_tensor(keep, dtype=torch.long).cpu()
    if keep.numel() == 0:
        raise ValueError(f"{group.name}: cannot remove every channel")
    if keep.numel() == group.width:
        return []
    slices: list[Slice] = []
    producer = net.layer(group.name)
    if isinstance(producer, ConvBlock):
        _cut(producer.conv.weight, 0, keep, slices)
        _cut(producer.conv.bias, 0, keep, slices)
        producer.conv.out_channels = int(keep.numel())
        norm = producer.norm
        _cut(norm.weight, 0, keep, slices)
        _cut(norm.bias, 0, keep, slices)
        _cut_buffer(norm, "running_mean", keep)
        _cut_buffer(norm, "running_var", keep)
        norm.num_features = int(keep.numel())
    elif isinstance(producer, _CONVT):
        _cut(producer.weight, 1, keep, slices)
        _cut(producer.bias, 0, keep, slices)
        producer.out_channels = int(keep.numel())
    else:
        raise TypeError(f"{group.name} is not prunable ({type(producer).__name__})")
    for consumer in group.consumers:
        m = net.layer(consumer.module)
        conv = m.conv if isinstance(m, ConvBlock) else m
        dim = 0 if isinstance(conv, _CONVT) else 1
        c_in = conv.weight.shape[dim]
        index = torch.cat([torch.arange(consumer.offset), consumer.offset + keep,
                           torch.arange(consumer.offset + group.width, c_in)])
        _cut(conv.weight, dim, index, slices)
        conv.in_channels = int(index.numel())
    return slices


def filter_parameters(net: UNet, name: str) -> list[tuple[nn.Parameter, int]]:
    """Every parameter that holds one slice per output channel of layer ``name``, with the channel dim: the
    conv weight (dim 0) and bias, and the affine norm's weight and bias; for a transposed conv its weight (dim 1)
    and bias. Together they decide the channel's output map."""
    producer = net.layer(name)
    if isinstance(producer, ConvBlock):
        params = [(producer.conv.weight, 0), (producer.conv.bias, 0), (producer.norm.weight, 0),
                  (producer.norm.bias, 0)]
    elif isinstance(producer, _CONVT):
        params = [(producer.weight, 1), (producer.bias, 0)]
    else:
        raise TypeError(f"{name} is not prunable ({type(producer).__name__})")
    return [(p, d) for p, d in params if p is not None]


def filters(net: UNet, name: str) -> torch.Tensor:
    """The producer's filters of layer ``name`` as rows: (C_out, fan_in · kernel) weights, without bias or norm
    (what L1-norm and FPGM rank)."""
    producer = net.layer(name)
    if isinstance(producer, ConvBlock):
        w = producer.conv.weight
        return w.detach().reshape(w.shape[0], -1)
    w = producer.weight
    return w.detach().transpose(0, 1).reshape(w.shape[1], -1)


@torch.no_grad()
def zero_channels(net: UNet, name: str, channels: torch.Tensor) -> None:
    """Soft pruning: sets every parameter of the given output channels to zero, so each of them outputs an
    all-zero map (conv → 0 → norm → γ·0 + β = 0 → LeakyReLU 0) and removing them later changes nothing."""
    for param, dim in filter_parameters(net, name):
        param.data.index_fill_(dim, channels.to(param.device), 0.0)


@torch.no_grad()
def merge_channels(net: UNet, group: PrunableGroup, clusters: list[torch.Tensor]) -> list[Slice]:
    """Replaces each cluster of channels (whose output maps are equal) by its first member: every consumer's
    input weights of the other members are added to the first member's, then the others are removed.

    Args:
        clusters: a partition of the group's channels, one int64 tensor per cluster.
    """
    firsts = torch.stack([c.min() for c in clusters])
    for consumer in group.consumers:
        m = net.layer(consumer.module)
        conv = m.conv if isinstance(m, ConvBlock) else m
        dim = 0 if isinstance(conv, _CONVT) else 1
        w = conv.weight.data
        for cluster, first in zip(clusters, firsts):
            members = consumer.offset + cluster.to(w.device)
            w.index_copy_(dim, (consumer.offset + first).reshape(1).to(w.device),
                          w.index_select(dim, members).sum(dim, keepdim=True))
    return remove_channels(net, group, torch.sort(firsts).values)
