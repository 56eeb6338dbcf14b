"""The torch backend: a (possibly pruned) network as a sliding-window :data:`Network`, and models loaded from a
training folder.

This is the only inference module that imports torch; the predictor, the sliding window and the deploy backend
(:mod:`sauronnet.deploy.runtime`) do not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sauronnet.checkpoint import load_checkpoint, network_from_checkpoint
from sauronnet.networks.unet import UNet
from sauronnet.plans import Plans
from sauronnet.precision import autocast, memory_format


class TorchNetwork:
    """Calls ``net`` on numpy batches: float32 (B, C, *patch) → float32 logits (B, K, *patch).

    Args:
        net: the network, deep supervision off.
        device: where it runs.
        precision: ``fp32`` or ``bf16`` (autocast, channels-last on the CPU; see :mod:`sauronnet.precision`).
    """

    def __init__(self, net: UNet, device: str | torch.device = "cpu", precision: str = "fp32"):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"a predictor runs fp32 or bf16 (resolve 'auto' with resolve_precision), got {precision!r}")
        self.device, self.precision = torch.device(device), precision
        self.format = memory_format(self.device, precision, net.plan.dim)
        self.net = net.to(self.device, memory_format=self.format).eval()
        self.name = f"torch {precision}"

    def worker_init(self) -> None:
        """Run first in each thread of a sliding window's ``workers``: one intra-op thread per call on the CPU (the
        calls run side by side), the calling thread keeps its own count."""
        if self.device.type == "cpu":
            torch.set_num_threads(1)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        # a network trained in float64 (sauron_train --precision fp64) is validated in float64
        dtype = next(self.net.parameters()).dtype
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device, dtype)
        with autocast(self.device, self.precision):
            out = self.net(t.contiguous(memory_format=self.format))
        return out.float().cpu().numpy()


def load_fold_network(path: Path, device: torch.device) -> tuple[UNet, Plans, str]:
    """Rebuilds the network of a checkpoint (its widths, hence pruned ones too) without deep supervision."""
    net, plans, configuration = network_from_checkpoint(load_checkpoint(path, device), deep_supervision=False)
    return net.to(device).eval(), plans, configuration


def model_dir_folds(model_dir: Path, folds: Sequence[str] | None, checkpoint: str) -> list[str]:
    """The folds to load: ``folds`` or every ``fold_*`` holding ``checkpoint_{checkpoint}.pth``."""
    if folds is not None:
        bad = [f for f in folds if not (str(f).isdigit() or f == "all")]
        if bad:
            raise ValueError(f"-f {' '.join(bad)}: a fold is a number (0-4) or 'all'")
        return list(folds)
    name = f"checkpoint_{checkpoint}.pth"
    found = sorted(p.name[5:] for p in model_dir.glob("fold_*") if (p / name).is_file())
    if not found:
        raise FileNotFoundError(f"{model_dir}: no fold_*/checkpoint_{checkpoint}.pth; train a fold first or pick "
                                "another --checkpoint")
    return found


def load_model_dir(model_dir: Path, folds: Sequence[str] | None, checkpoint: str, device: str | torch.device
                   ) -> tuple[list[UNet], Plans, str, list[dict]]:
    """Every fold's network (deep supervision off) with the plans, configuration and raw checkpoints.

    Raises:
        ValueError: if the folds were trained with different plans or configurations.
    """
    folds = model_dir_folds(model_dir, folds, checkpoint)
    dev = torch.device(device)
    ckpts = [load_checkpoint(model_dir / f"fold_{f}" / f"checkpoint_{checkpoint}.pth", dev) for f in folds]
    loaded = [network_from_checkpoint(c, deep_supervision=False) for c in ckpts]
    plans, configuration = loaded[0][1], loaded[0][2]
    for (_, p, c), f in zip(loaded[1:], folds[1:]):
        if p != plans or c != configuration:
            raise ValueError(f"{model_dir}/fold_{f} was trained with other plans or configuration than fold_{folds[0]}; "
                             "ensemble only folds of one model")
    return [n.to(dev).eval() for n, _, _ in loaded], plans, configuration, ckpts
