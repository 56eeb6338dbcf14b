"""Whole-volume prediction with one or more trained folds.

``Predictor.from_model_dir(dir, folds)`` rebuilds every fold's (possibly pruned) network from its checkpoint
alone; :meth:`Predictor.predict` takes the raw image channels of one case and returns the label map on the
input's grid (and, if asked, the class probabilities). Folds are ensembled by averaging softmax probabilities
(imported nnU-Net models: by averaging logits, resampled before the softmax, as nnU-Net v2 does).
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from sauronnet.inference.export import label_dtype, probabilities_to_labels, restore_probabilities
from sauronnet.inference.postprocessing import POSTPROCESSING_FILE, keep_largest_component
from sauronnet.inference.sliding_window import sliding_window
from sauronnet.inference.inputs import InputCase
from sauronnet.io import Geometry, read_images, write_seg
from sauronnet.atomic import atomic_path
from sauronnet.checkpoint import load_checkpoint, network_from_checkpoint
from sauronnet.networks.unet import UNet
from sauronnet.plans import ConfigurationPlan, Plans
from sauronnet.precision import autocast, memory_format
from sauronnet.preprocessing.preprocess import CaseProperties, preprocess_case
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
    return _inference_network(load_checkpoint(path, device), device)


def _inference_network(ckpt: dict, device: torch.device) -> tuple[UNet, Plans, str]:
    net, plans, configuration = network_from_checkpoint(ckpt, deep_supervision=False)
    return net.to(device).eval(), plans, configuration


class Predictor:
    """Holds the networks and the inference settings; see :func:`sliding_window` for the tiling."""

    def __init__(self, networks: Sequence[UNet], plans: Plans, configuration: str, step: float = 0.5,
                 mirror: bool = True, device: str | torch.device = "cpu",
                 keep_largest_component: Sequence[int] = (), allowed_mirror_axes: Sequence[int] | None = None,
                 average_logits: bool = False, precision: str = "fp32"):
        if not networks:
            raise ValueError("a predictor needs at least one network")
        if not 0 < step <= 1:
            raise ValueError(f"step must be in (0, 1], got {step}")
        self.networks, self.plans, self.configuration = list(networks), plans, configuration
        self.config = plans.configuration(configuration)
        self.step, self.device = step, torch.device(device)
        allowed = tuple(range(self.config.network.dim)) if allowed_mirror_axes is None else allowed_mirror_axes
        self.mirror_axes = tuple(allowed) if mirror else ()
        self.keep_largest_component = tuple(keep_largest_component)
        self.average_logits = average_logits
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"a predictor runs fp32 or bf16 (resolve 'auto' with resolve_precision), got {precision!r}")
        self.precision = precision
        self._format = memory_format(self.device, precision, self.config.network.dim)
        self.networks = [net.to(memory_format=self._format) for net in self.networks]

    def _network_call(self, net: UNet):
        """The only precision-specific step: the network in its precision and layout, logits back in float32."""
        def call(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.precision):
                return net(x.contiguous(memory_format=self._format)).float()
        return call

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, folds: Sequence[str] | None = None, checkpoint: str = "final",
                       step: float = 0.5, mirror: bool = True, device: str = "cpu",
                       postprocess: bool = True, precision: str = "fp32") -> Predictor:
        """Loads ``model_dir/fold_F/checkpoint_{checkpoint}.pth`` for each fold (default: every fold found).

        With ``postprocess``, keep-largest-component applies to the labels every fold's validation chose
        (``fold_F/postprocessing.json``). ``precision``: ``fp32`` or ``bf16`` (see :mod:`sauronnet.precision`).
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
        ckpts = [load_checkpoint(model_dir / f"fold_{f}" / f"checkpoint_{checkpoint}.pth", dev) for f in folds]
        loaded = [_inference_network(c, dev) for c in ckpts]
        plans, configuration = loaded[0][1], loaded[0][2]
        for (_, p, c), f in zip(loaded[1:], folds[1:]):
            if p != plans or c != configuration:
                raise ValueError(f"{model_dir}/fold_{f} was trained with other plans or configuration than "
                                 f"fold_{folds[0]}; ensemble only folds of one model")
        # an imported nnU-Net model carries its trainer's allowed mirroring axes (ours mirror along all axes) and
        # asks for nnU-Net's export rule (folds averaged and resampled as logits, softmax after)
        allowed = ckpts[0].get("mirror_axes")
        logits = ckpts[0].get("score_space") == "logits"
        keep: set[int] | None = None
        for f in folds:
            path = model_dir / f"fold_{f}" / POSTPROCESSING_FILE
            labels = set(read_json(path)["keep_largest_component"]) if postprocess and path.is_file() else set()
            keep = labels if keep is None else keep & labels
        return cls([n for n, _, _ in loaded], plans, configuration, step, mirror, device,
                   sorted(keep or ()), allowed, logits, precision)

    @torch.inference_mode()
    def predict_preprocessed(self, data: np.ndarray) -> np.ndarray:
        """Mean softmax over the folds for a preprocessed case: float32 (C, z, y, x) → (K, z, y, x).

        With ``average_logits`` (imported nnU-Net models): the folds' mean logits instead.
        """
        x = torch.from_numpy(np.ascontiguousarray(data)).to(self.device)
        patch = self.config.patch_size
        probs = None
        for net in self.networks:
            call = self._network_call(net)
            if self.config.network.dim == 2:
                logits = torch.stack([sliding_window(call, x[:, z], patch, self.step, True, self.mirror_axes)
                                      for z in range(x.shape[1])], dim=1)
            else:
                logits = sliding_window(call, x, patch, self.step, True, self.mirror_axes)
            p = logits if self.average_logits else torch.softmax(logits, 0)
            probs = p if probs is None else probs + p
        return (probs / len(self.networks)).cpu().numpy()

    def predict(self, data: np.ndarray, geometry: Geometry, return_probabilities: bool = False) -> Prediction:
        """Predicts one case from its raw channels.

        Args:
            data: float32 (C, Z, Y, X) as read (see :func:`sauronnet.io.read_images`).
            geometry: the input's header.
        """
        pre, props = prepare_case(data, geometry, self.plans, self.config)
        return finish_case(self.predict_preprocessed(pre), props, self.plans, self.config,
                           self.keep_largest_component, return_probabilities, self.average_logits)


def prepare_case(data: np.ndarray, geometry: Geometry, plans: Plans, config: ConfigurationPlan
                 ) -> tuple[np.ndarray, CaseProperties]:
    """Checks the channel count and preprocesses raw channels (C, Z, Y, X) for the network."""
    if data.shape[0] != len(plans.channel_names):
        raise ValueError(f"the model expects {len(plans.channel_names)} channel(s) {list(plans.channel_names)}, "
                         f"got {data.shape[0]}")
    pre, _, props = preprocess_case(data, None, geometry, "", plans, config)
    return pre, props


def finish_case(probs: np.ndarray, props: CaseProperties, plans: Plans, config: ConfigurationPlan,
                keep_largest: Sequence[int] = (), return_probabilities: bool = False,
                logits: bool = False) -> Prediction:
    """Probabilities (or, with ``logits``, logits) on the preprocessed grid → label map (and probabilities) on
    the input grid, postprocessed."""
    if return_probabilities:
        # resample once; outside the crop box background has probability 1, so argmax gives 0 there
        full = restore_probabilities(probs, props, plans, config, logits)
        labels = full.argmax(0).astype(label_dtype(full.shape[0]))
    else:
        full, labels = None, probabilities_to_labels(probs, props, plans, config)
    if keep_largest:
        labels = keep_largest_component(labels, keep_largest)
    return Prediction(labels, full)


def output_path(out_dir: Path, case: InputCase) -> Path:
    return out_dir / f"{case.case_id}{case.ending}"


def _load(job: tuple) -> tuple[np.ndarray, CaseProperties, Geometry]:
    files, plans, config = job
    data, geometry = read_images(files)
    pre, props = prepare_case(data, geometry, plans, config)
    return pre, props, geometry


def _save(job: tuple) -> None:
    probs, props, plans, config, keep, logits, geometry, target, probabilities_path = job
    pred = finish_case(probs, props, plans, config, keep, probabilities_path is not None, logits)
    write_seg(pred.labels, geometry, target)
    if probabilities_path is not None:
        with atomic_path(probabilities_path, ".npz") as tmp:
            np.savez_compressed(tmp, probabilities=pred.probabilities)


def predict_cases(predictor: Predictor, cases: Sequence[InputCase], out_dir: Path, num_processes: int = 1,
                  resume: bool = False, save_probabilities: bool = False, progress: bool = True
                  ) -> tuple[int, list[str]]:
    """Predicts every case into ``out_dir``; returns how many were written and one line per failed case.

    With ``num_processes`` > 1, reading + preprocessing of the next cases and resampling + writing of finished
    ones run in that many spawned worker processes while the network predicts in this one.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [c for c in cases if not (resume and output_path(out_dir, c).is_file())]
    plans, config, keep = predictor.plans, predictor.config, predictor.keep_largest_component
    problems: list[str] = []
    done = 0

    def save_job(probs, props, geometry, case):
        npz = out_dir / f"{case.case_id}.npz" if save_probabilities else None
        return probs, props, plans, config, keep, predictor.average_logits, geometry, output_path(out_dir, case), npz

    bar = tqdm(todo, desc="Predict", disable=not progress, unit="case")
    if num_processes <= 1:
        for case in bar:
            try:
                pre, props, geometry = _load((case.files, plans, config))
                _save(save_job(predictor.predict_preprocessed(pre), props, geometry, case))
                done += 1
            except (ValueError, FileNotFoundError) as e:
                problems.append(f"{case.files[0]}: {e}")
        return done, problems
    with ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        loads = {}
        saves = []
        for i, case in enumerate(bar):
            for ahead in todo[i:i + num_processes]:
                if ahead.case_id not in loads:
                    loads[ahead.case_id] = pool.submit(_load, (ahead.files, plans, config))
            try:
                pre, props, geometry = loads.pop(case.case_id).result()
            except (ValueError, FileNotFoundError) as e:
                problems.append(f"{case.files[0]}: {e}")
                continue
            saves.append((case, pool.submit(_save, save_job(predictor.predict_preprocessed(pre), props, geometry,
                                                            case))))
        for case, future in saves:
            try:
                future.result()
                done += 1
            except (ValueError, FileNotFoundError) as e:
                problems.append(f"{case.files[0]}: {e}")
    return done, problems
