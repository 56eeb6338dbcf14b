"""One call that prunes a layer of a network under training: the surgery and the optimizer state together."""
from __future__ import annotations

import torch

from sauronnet.networks.unet import UNet
from sauronnet.pruning.optim_state import slice_optimizer_state
from sauronnet.pruning.surgery import merge_channels, remove_channels


def _group(network: UNet, name: str):
    for g in network.prunable_groups():
        if g.name == name:
            return g
    raise KeyError(f"{name!r} is not a prunable layer of this network")


def prune_layer(network: UNet, optimizer: torch.optim.Optimizer | None, name: str, keep: torch.Tensor) -> int:
    """Keeps only channels ``keep`` (sorted indices) of layer ``name``, cuts the optimizer state to match;
    returns how many channels were removed."""
    group = _group(network, name)
    slices = remove_channels(network, group, keep)
    if optimizer is not None:
        slice_optimizer_state(optimizer, slices)
    return group.width - int(torch.as_tensor(keep).numel())


def merge_layer(network: UNet, optimizer: torch.optim.Optimizer | None, name: str,
                clusters: list[torch.Tensor]) -> int:
    """Merges each cluster of equal channels of layer ``name`` into one (see ``merge_channels``); returns how
    many channels were removed."""
    group = _group(network, name)
    slices = merge_channels(network, group, clusters)
    if optimizer is not None:
        slice_optimizer_state(optimizer, slices)
    return group.width - len(clusters)
