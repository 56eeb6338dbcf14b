"""One case through a trained network, every prunable layer's output kept (what ``sauron_inspect`` shows).

The case is preprocessed exactly as ``sauron_predict`` does; the network (one fold, deep supervision off, eval
mode) runs once on the whole preprocessed volume, or on the centred patch-sized region of it when the volume is
larger than ``max_voxels`` (a whole CT volume's maps would not fit in memory), zero-padded to a multiple of the
network's total stride. Forward hooks keep each requested layer's output.

Layouts: ``data`` float32 (C, z, y, x) on the preprocessed grid; a layer's maps float32 (C_l, z_l, y_l, x_l) at
the layer's own resolution (the region divided by the layer's stride, rounded up); :func:`to_input_grid` brings
them back onto the input image's grid (nearest upsampling to the preprocessed grid, then the prediction's own
resampling, uncropping and transposing), (C_l, Z, Y, X), zero outside the inspected region.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sauronnet.inference.predictor import prepare_case
from sauronnet.inference.torch_network import load_model_dir
from sauronnet.io import Geometry, read_images
from sauronnet.networks.unet import UNet
from sauronnet.plans import ConfigurationPlan, Plans
from sauronnet.preprocessing.preprocess import CaseProperties, uncrop
from sauronnet.preprocessing.resample import resample_data

#: the whole preprocessed volume is inspected up to this many voxels (all layers' maps of a 64³-like volume)
MAX_VOXELS = 4_000_000


@dataclass
class Inspection:
    """A case's per-layer maps and what is needed to put them back on the input's grid.

    Attributes:
        layers: layer name → float32 (C_l, *S_l) maps at the layer's resolution, in forward order.
        strides: layer name → per-axis stride of the layer relative to the network input.
        region: slices of the preprocessed grid that were inspected.
        preprocessed_shape: (z, y, x) of the preprocessed volume.
    """

    layers: dict[str, np.ndarray]
    strides: dict[str, tuple[int, ...]]
    region: tuple[slice, ...]
    preprocessed_shape: tuple[int, ...]
    props: CaseProperties
    plans: Plans
    config: ConfigurationPlan
    geometry: Geometry


def total_stride(net: UNet) -> tuple[int, ...]:
    """Per-axis product of the encoder's strides: input sizes must be multiples of it."""
    return tuple(int(np.prod([s[a] for s in net.plan.strides])) for a in range(net.plan.dim))


@torch.no_grad()
def capture_layers(net: UNet, data: np.ndarray, names: Sequence[str]) -> tuple[dict[str, np.ndarray],
                                                                               dict[str, tuple[int, ...]]]:
    """Runs ``data`` (C, *S) through ``net`` and returns each named layer's output (C_l, *S_l), cropped to the
    part that covers ``data`` (not the padding), with the layer's stride."""
    spatial = data.shape[1:]
    mult = total_stride(net)
    padded = [int(math.ceil(s / m) * m) for s, m in zip(spatial, mult)]
    x = np.zeros((1, data.shape[0], *padded), np.float32)
    x[(0, slice(None)) + tuple(slice(0, s) for s in spatial)] = data
    captured: dict[str, torch.Tensor] = {}
    hooks = [net.layer(n).register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o.detach()))
             for n in names]
    was_ds = net.deep_supervision
    net.eval()
    net.deep_supervision = False
    try:
        net(torch.from_numpy(x).to(next(net.parameters()).device))
    finally:
        net.deep_supervision = was_ds
        for h in hooks:
            h.remove()
    maps, strides = {}, {}
    for n in names:
        out = captured[n][0].float().cpu().numpy()
        stride = tuple(p // s for p, s in zip(padded, out.shape[1:]))
        keep = tuple(slice(0, math.ceil(s / st)) for s, st in zip(spatial, stride))
        maps[n], strides[n] = np.ascontiguousarray(out[(slice(None),) + keep]), stride
    return maps, strides


def centred_region(shape: Sequence[int], size: Sequence[int]) -> tuple[slice, ...]:
    """The region of ``size`` (clipped to ``shape``) centred in ``shape``."""
    out = []
    for s, p in zip(shape, size):
        p = min(s, p)
        start = (s - p) // 2
        out.append(slice(start, start + p))
    return tuple(out)


def inspect_case(model_dir: str | Path, images: Sequence[str | Path], fold: str | None = None,
                 checkpoint: str = "final", layers: Sequence[str] | None = None, max_voxels: int = MAX_VOXELS,
                 device: str = "cpu") -> Inspection:
    """Preprocesses the case given by ``images`` (one file per channel) and captures the layers' maps.

    Args:
        fold: the model's fold to inspect (default: its first trained fold).
        layers: prunable layers to keep (default: all, in forward order).

    Raises:
        ValueError: an unknown layer name, a 2D configuration, or images that do not fit the model.
    """
    model_dir = Path(model_dir)
    nets, plans, configuration, _ = load_model_dir(model_dir, [fold] if fold is not None else None, checkpoint,
                                                   device)
    net = nets[0]
    if net.plan.dim != 3:
        raise ValueError(f"{model_dir} is a 2D ({configuration}) model; sauron_inspect shows 3D networks only")
    names = list(net.widths())
    if layers:
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(f"--layers: {', '.join(unknown)} not in this network; its prunable layers are "
                             f"{', '.join(names)}")
        names = [n for n in names if n in layers]
    config = plans.configuration(configuration)
    data, geometry = read_images([Path(p) for p in images])
    pre, props = prepare_case(data, geometry, plans, config)
    shape = pre.shape[1:]
    region = (tuple(slice(0, s) for s in shape) if int(np.prod(shape)) <= max_voxels
              else centred_region(shape, config.patch_size))
    maps, strides = capture_layers(net, pre[(slice(None),) + region], names)
    return Inspection(maps, strides, region, tuple(shape), props, plans, config, geometry)


def to_input_grid(inspection: Inspection, name: str) -> np.ndarray:
    """The layer's maps (C_l, Z, Y, X) float32 on the input image's grid (zero outside the inspected region)."""
    maps, stride, region = inspection.layers[name], inspection.strides[name], inspection.region
    up = maps
    for axis, st in enumerate(stride):
        up = np.repeat(up, st, axis=axis + 1)
    size = tuple(r.stop - r.start for r in region)
    full = np.zeros((maps.shape[0], *inspection.preprocessed_shape), np.float32)
    full[(slice(None),) + region] = up[(slice(None),) + tuple(slice(0, s) for s in size)]
    props, config = inspection.props, inspection.config
    back = resample_data(full, props.shape_after_cropping, props.target_spacing, props.original_spacing,
                         config.resampling_probabilities_order, config.resampling_data_order_z)
    return uncrop(back.astype(np.float32, copy=False), props, inspection.plans.transpose_backward)
