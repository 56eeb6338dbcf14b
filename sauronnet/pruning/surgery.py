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
