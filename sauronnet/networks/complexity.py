"""Parameters and forward FLOPs of a built network, per prunable layer and in total, and its forward time here.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and transposed convolutions,
1 MAC = 2 FLOP), measured for one inference forward pass (batch 1, deep supervision off) at a given patch. They do
not predict CPU time for narrow layers (a convolution pruned below oneDNN's 8-channel AVX2 block runs no faster, and
norms and layout conversions cost per voxel), so :func:`forward_seconds` measures it.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from sauronnet.networks.unet import UNet, build_network


@dataclass(frozen=True)
class Complexity:
    """``layers``: per prunable layer (and heads) → (width, parameters, FLOPs); totals over the whole network."""

    layers: dict[str, tuple[int, int, int]]
    parameters: int
    flops: int


def _module_name(net: UNet, layer: str) -> str:
    target = net.layer(layer)
    return next(n for n, m in net.named_modules() if m is target)


@torch.no_grad()
def measure(net: UNet, patch_size: Sequence[int]) -> Complexity:
    """Counts parameters and FLOPs of ``net`` for one (1, C, *patch_size) inference forward pass."""
    was_training, was_ds = net.training, net.deep_supervision
    net.eval()
    net.deep_supervision = False
    param = next(net.parameters())
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            net(torch.zeros(1, net.in_channels, *patch_size, device=param.device, dtype=param.dtype))
    finally:
        net.train(was_training)
        net.deep_supervision = was_ds
    per_module = counter.get_flop_counts()
    layers = {}
    names = list(net.widths()) + [f"head{d}" for d in range(len(net.heads))]
    widths = net.widths()
    for layer in names:
        module = net.layer(layer)
        mod_name = _module_name(net, layer)
        # the counter reports every module with its children included: the module's own key is its total
        flops = sum(per_module.get(f"UNet.{mod_name}", {}).values())
        params = sum(p.numel() for p in module.parameters())
        layers[layer] = (widths.get(layer, net.num_classes), int(params), int(flops))
    return Complexity(layers, sum(p.numel() for p in net.parameters()), int(counter.get_total_flops()))


@torch.inference_mode()
def forward_seconds(nets: Sequence[UNet], patch_size: Sequence[int], batch: int = 1, repeats: int = 5
                    ) -> list[float]:
    """Per network (on the CPU), the median seconds of one inference forward (deep supervision off, the current
    torch threads) on ``batch`` random patches in the dtype of its parameters; the networks' calls interleaved, so
    that a drift of the machine hits all alike, each after one warm-up call (oneDNN builds its kernels on the
    first)."""
    states = [(n.training, n.deep_supervision) for n in nets]
    times: list[list[float]] = [[] for _ in nets]
    try:
        inputs = []
        for n in nets:
            n.eval()
            n.deep_supervision = False
            inputs.append(torch.randn(batch, n.in_channels, *patch_size, dtype=next(n.parameters()).dtype))
            n(inputs[-1])
        for _ in range(repeats):
            for n, x, t in zip(nets, inputs, times):
                t0 = time.perf_counter()
                n(x)
                t.append(time.perf_counter() - t0)
    finally:
        for n, (training, ds) in zip(nets, states):
            n.train(training)
            n.deep_supervision = ds
    return [statistics.median(t) for t in times]


def unpruned_like(net: UNet) -> UNet:
    """A network with the same plan at the plan's full widths (the "before pruning" reference)."""
    return build_network(net.plan, net.in_channels, net.num_classes, None, deep_supervision=False)
