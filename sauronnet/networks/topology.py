"""The U-Net's layers as one list (pure Python; the planner must not import torch).

Everything that needs the network's structure derives it from :func:`layers`: the planned widths
(``unet.default_widths``), the modules ``unet.UNet`` builds, who consumes whose channels at which offset
(``UNet.prunable_groups``, hence pruning) and the planner's cost estimates (``estimates``). Names:

- ``enc{s}.{i}``: conv block ``i`` of encoder stage ``s`` (stage 0: full resolution);
- ``up{d}``: the transposed conv of decoder stage ``d`` (``d = 0`` is the deepest);
- ``dec{d}.{i}``: conv block ``i`` of decoder stage ``d``; its first block reads ``cat([up{d}, skip])``;
- ``head{d}``: the 1×1 segmentation conv of decoder stage ``d`` (its outputs are the classes).
"""
from __future__ import annotations

from dataclasses import dataclass

from sauronnet.plans import NetworkPlan

#: the name of the network input among a layer's inputs
IMAGE = "image"


@dataclass(frozen=True)
class Layer:
    """One layer in forward order.

    Attributes:
        kind: ``conv`` (a conv block), ``up`` (a transposed conv, kernel = stride) or ``head``.
        stage: the resolution stage of its output (0: the input's).
        kernel: conv kernel (``up``: equal to ``stride``; ``head``: ones).
        stride: conv stride (only an encoder stage's first block strides; ``up``: the upsampling factor).
        planned: the plan's output width (``head``: None, the number of classes).
        inputs: the layers whose outputs it reads, concatenated in this order (:data:`IMAGE`: the network input).
    """

    name: str
    kind: str
    stage: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    planned: int | None
    inputs: tuple[str, ...]


def layers(plan: NetworkPlan) -> list[Layer]:
    """Every layer of the plan's U-Net in forward order (decoder stages deepest first, each followed by its head)."""
    n, f, dim = plan.n_stages, plan.features_per_stage, plan.dim
    ones = (1,) * dim
    out: list[Layer] = []
    previous = IMAGE
    last_of_stage = []
    for s in range(n):
        for i in range(plan.n_conv_per_stage_encoder[s]):
            name = f"enc{s}.{i}"
            out.append(Layer(name, "conv", s, tuple(plan.kernel_sizes[s]), tuple(plan.strides[s]) if i == 0 else ones,
                             f[s], (previous,)))
            previous = name
        last_of_stage.append(previous)
    for d in range(n - 1):
        target = n - 2 - d  # the encoder stage whose resolution and width this decoder stage has
        stride = tuple(plan.strides[target + 1])
        out.append(Layer(f"up{d}", "up", target, stride, stride, f[target], (previous,)))
        inputs: tuple[str, ...] = (f"up{d}", last_of_stage[target])
        for i in range(plan.n_conv_per_stage_decoder[d]):
            name = f"dec{d}.{i}"
            out.append(Layer(name, "conv", target, tuple(plan.kernel_sizes[target]), ones, f[target], inputs))
            inputs = (name,)
        out.append(Layer(f"head{d}", "head", target, ones, ones, None, inputs))
        previous = inputs[0]
    return out


def prunable(plan: NetworkPlan) -> list[Layer]:
    """The layers whose output channels may be pruned (all but the heads), in forward order."""
    return [layer for layer in layers(plan) if layer.kind != "head"]


def consumers(plan: NetworkPlan, widths: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """For every prunable layer, the layers reading its channels and the offset at which they start inside that
    reader's concatenated input, given the current ``widths``."""
    out: dict[str, list[tuple[str, int]]] = {layer.name: [] for layer in prunable(plan)}
    for layer in layers(plan):
        offset = 0
        for src in layer.inputs:
            if src != IMAGE:
                out[src].append((layer.name, offset))
                offset += widths[src]
    return out
