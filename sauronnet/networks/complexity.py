"""Parameters and forward FLOPs of a built network, per prunable layer and in total.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and transposed convolutions,
1 MAC = 2 FLOP), measured for one inference forward pass (batch 1, deep supervision off) at a given patch.

FLOPs are not CPU time for narrow layers: on an AVX2 CPU, oneDNN's float32 convolutions compute output channels in
blocks of 8 (the vector width in floats), so a layer of 4 channels costs what one of 8 costs.
:func:`vector_padded_flops` counts the FLOPs of the network with every layer's width rounded up to such a block;
the ratio of two networks' padded FLOPs bounds the CPU speed-up that pruning the one into the other can give.
Measured (AVX2, 2 threads): a Conv3d 8→c took the same time for c = 1…8 (``benchmarks/cpu_limit.py --parts
output-channels``), and pruned `cpu`-preset networks with 7-17x fewer FLOPs had padded ratios of 2.3-2.9x and ran
1.9-3.0x faster (``benchmarks/sauron_compression.py``'s "block FLOP ratio" against its "speed-up"). Other CPUs are
not claimed: on an AVX-512 machine, whose oneDNN kernels differ, a 4-channel layer ran in half the time of an
8-channel one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from sauronnet.networks.estimates import forward_flops
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


#: the CPU capabilities (``torch.backends.cpu.get_cpu_capability``) whose float32 oneDNN convolutions were measured
#: to compute output channels in blocks, and the block (see the module docstring)
MEASURED_BLOCKS = {"AVX2": 8}


def vector_channels() -> int | None:
    """Channels per block in this CPU's float32 oneDNN convolutions, where measured (:data:`MEASURED_BLOCKS`); None
    on other CPUs."""
    return MEASURED_BLOCKS.get(torch.backends.cpu.get_cpu_capability().upper())


def vector_padded_widths(net: UNet, block: int) -> dict[str, int]:
    """Every prunable layer's width rounded up to a multiple of ``block``."""
    return {name: -(-w // block) * block for name, w in net.widths().items()}


def vector_padded_flops(net: UNet, patch_size: Sequence[int], block: int) -> int:
    """Forward FLOPs of ``net`` with its widths rounded up to ``block`` channels (:func:`vector_channels`): what
    the CPU computes, padding included (see the module docstring). Counted from the topology
    (:func:`sauronnet.networks.estimates.forward_flops`), without building the padded network."""
    widths = vector_padded_widths(net, block)
    return forward_flops(net.plan, patch_size, net.in_channels, net.num_classes, deep_supervision=False,
                         widths=list(widths.values()))


def vector_bound(unpruned: UNet, pruned: UNet, patch_size: Sequence[int]) -> dict:
    """What this CPU computes of the unpruned and the pruned network (:func:`vector_padded_flops`), for
    ``pruning_summary.json``; empty on a CPU without a measured block (:func:`vector_channels`)."""
    block = vector_channels()
    if block is None:
        return {}
    return {"vector_channels": block, "vector_padded_flops_before": vector_padded_flops(unpruned, patch_size, block),
            "vector_padded_flops_after": vector_padded_flops(pruned, patch_size, block)}


def vector_bound_text(bound: dict) -> str | None:
    """One line for users from :func:`vector_bound`'s figures (None without them): the speed-up they allow."""
    if "vector_channels" not in bound:
        return None
    before, after = bound["vector_padded_flops_before"], bound["vector_padded_flops_after"]
    return (f"this CPU computes a convolution's channels {bound['vector_channels']} at a time: counting that "
            f"padding, {before / 1e9:.3f} -> {after / 1e9:.3f} GFLOP, so inference gets at best about "
            f"{before / after:.1f}x faster here")


def unpruned_like(net: UNet) -> UNet:
    """A network with the same plan at the plan's full widths (the "before pruning" reference)."""
    return build_network(net.plan, net.in_channels, net.num_classes, None, deep_supervision=False)
