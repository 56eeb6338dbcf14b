"""Whole-volume prediction with one or more trained folds.

``Predictor.from_model_dir(dir, folds)`` rebuilds every fold's (possibly pruned) network from its checkpoint
alone; :meth:`Predictor.predict` takes the raw image channels of one case and returns the label map on the
input's grid (and, if asked, the class probabilities). Folds are ensembled by averaging softmax probabilities.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sauronnet.inference.export import probabilities_to_labels, restore_probabilities
from sauronnet.inference.postprocessing import POSTPROCESSING_FILE, keep_largest_component
from sauronnet.inference.sliding_window import sliding_window
from sauronnet.io import Geometry
from sauronnet.checkpoint import load_checkpoint, network_from_checkpoint
from sauronnet.networks.unet import UNet
from sauronnet.plans import Plans
from sauronnet.preprocessing.preprocess import preprocess_case
from sauronnet.serialization import read_json

logger = logging.getLogger(__name__)

CHECKPOINTS = ("final", "best", "latest")


@dataclass
class Prediction:
    """``labels``: (Z, Y, X) on the input grid; ``probabilities``: float32 (K, Z, Y, X) or None."""

    labels: np.ndarray
    probabilities: np.ndarray | None


def load_fold_network(path: Path, device: torch.device) -> tuple[UNet, Plans, str]:
    """Rebuilds the network of a checkpoint (its widths, hence pruned ones too) without deep supervision."""
    net, plans, configuration = network_from_checkpoint(load_checkpoint(path, device), deep_supervision=False)
    return net.to(device).eval(), plans, configuration


class Predictor:
    """Holds the networks and the inference settings; see :func:`sliding_window` for the tiling."""

    def __init__(self, networks: Sequence[UNet], plans: Plans, configuration: str, step: float = 0.5,
                 mirror: bool = True, device: str | torch.device = "cpu",
                 keep_largest_component: Sequence[int] = ()):
        if not networks:
            raise ValueError("a predictor needs at least one network")
        if not 0 < step <= 1:
            raise ValueError(f"step must be in (0, 1], got {step}")
        self.networks, self.plans, self.configuration = list(networks), plans, configuration
        self.config = plans.configuration(configuration)
        self.step, self.device = step, torch.device(device)
        self.mirror_axes = tuple(range(self.config.network.dim)) if mirror else ()
        self.keep_largest_component = tuple(keep_largest_component)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, folds: Sequence[str] | None = None, checkpoint: str = "final",
                       step: float = 0.5, mirror: bool = True, device: str = "cpu",
                       postprocess: bool = True) -> Predictor:
        """Loads ``model_dir/fold_F/checkpoint_{checkpoint}.pth`` for each fold (default: every fold found).

        With ``postprocess``, keep-largest-component applies to the labels every fold's validation chose
        (``fold_F/postprocessing.json``).
        """
        model_dir = Path(model_dir)
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"--checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
        if folds is None:
            name = f"checkpoint_{checkpoint}.pth"
            folds = sorted(p.name[5:] for p in model_dir.glob("fold_*") if (p / name).is_file())
            if not folds:
                raise FileNotFoundError(f"{model_dir}: no fold_*/checkpoint_{checkpoint}.pth; train a fold first or "
                                        "pick another --checkpoint")
        dev = torch.device(device)
        loaded = [load_fold_network(model_dir / f"fold_{f}" / f"checkpoint_{checkpoint}.pth", dev) for f in folds]
        plans, configuration = loaded[0][1], loaded[0][2]
        for (_, p, c), f in zip(loaded[1:], folds[1:]):
            if p != plans or c != configuration:
                raise ValueError(f"{model_dir}/fold_{f} was trained with other plans or configuration than "
                                 f"fold_{folds[0]}; ensemble only folds of one model")
        keep: set[int] | None = None
        for f in folds:
            path = model_dir / f"fold_{f}" / POSTPROCESSING_FILE
            labels = set(read_json(path)["keep_largest_component"]) if postprocess and path.is_file() else set()
            keep = labels if keep is None else keep & labels
        return cls([n for n, _, _ in loaded], plans, configuration, step, mirror, device, sorted(keep or ()))

    @torch.inference_mode()
    def predict_preprocessed(self, data: np.ndarray) -> np.ndarray:
        """Mean softmax over the folds for a preprocessed case: float32 (C, z, y, x) → (K, z, y, x)."""
        x = torch.from_numpy(np.ascontiguousarray(data)).to(self.device)
        patch = self.config.patch_size
        probs = None
        for net in self.networks:
            if self.config.network.dim == 2:
                logits = torch.stack([sliding_window(net, x[:, z], patch, self.step, True, self.mirror_axes)
                                      for z in range(x.shape[1])], dim=1)
            else:
                logits = sliding_window(net, x, patch, self.step, True, self.mirror_axes)
            p = torch.softmax(logits, 0)
            probs = p if probs is None else probs + p
        return (probs / len(self.networks)).cpu().numpy()

    def predict(self, data: np.ndarray, geometry: Geometry, return_probabilities: bool = False) -> Prediction:
        """Predicts one case from its raw channels.

        Args:
            data: float32 (C, Z, Y, X) as read (see :func:`sauronnet.io.read_images`).
            geometry: the input's header.
        """
        if data.shape[0] != len(self.plans.channel_names):
            raise ValueError(f"the model expects {len(self.plans.channel_names)} channel(s) "
                             f"{list(self.plans.channel_names)}, got {data.shape[0]}")
        pre, _, props = preprocess_case(data, None, geometry, "", self.plans, self.config)
        probs = self.predict_preprocessed(pre)
        labels = probabilities_to_labels(probs, props, self.plans, self.config)
        if self.keep_largest_component:
            labels = keep_largest_component(labels, self.keep_largest_component)
        full = restore_probabilities(probs, props, self.plans, self.config) if return_probabilities else None
        return Prediction(labels, full)
