"""Whole-volume prediction with one or more folds, whatever runs the network.

A :class:`Predictor` holds one sliding-window :data:`~sauronnet.inference.sliding_window.Network` per fold (a
torch network, :class:`sauronnet.inference.torch_network.TorchNetwork`, or an ONNX graph in onnxruntime,
:class:`sauronnet.deploy.runtime.OnnxNetwork`) with the plans; :func:`sauronnet.inference.loading.load_predictor`
builds one from a training folder or a ``.sauron`` bundle. :meth:`Predictor.predict` takes the raw image channels
of one case and returns the label map on the input's grid (and, if asked, the class probabilities). Folds are
ensembled by averaging softmax probabilities (imported nnU-Net models: by averaging logits, resampled before the
softmax, as nnU-Net v2 does). Nothing here imports torch.
"""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from sauronnet.inference.export import label_dtype, probabilities_to_labels, restore_probabilities, softmax
from sauronnet.inference.postprocessing import keep_largest_component
from sauronnet.inference.sliding_window import (Network, Workers, sliding_window, sliding_window_slices,
                                                tiles_per_call)
from sauronnet.inference.inputs import InputCase
from sauronnet.io import Geometry, read_images, write_seg
from sauronnet.atomic import atomic_path
from sauronnet.plans import ConfigurationPlan, Plans
from sauronnet.preprocessing.preprocess import CaseProperties, preprocess_case

logger = logging.getLogger(__name__)

CHECKPOINTS = ("final", "best", "latest")


@dataclass
class Prediction:
    """``labels``: (Z, Y, X) on the input grid; ``probabilities``: float32 (K, Z, Y, X) or None."""

    labels: np.ndarray
    probabilities: np.ndarray | None


class Predictor:
    """Holds the networks and the inference settings; see :func:`sliding_window` for the tiling.

    Args:
        networks: one sliding-window network per fold.
        plans, configuration: what the networks were trained with.
        step: tile step as a fraction of the patch.
        mirror: mirroring test-time augmentation along ``allowed_mirror_axes`` (default: every axis).
        keep_largest_component: labels reduced to their largest connected component.
        average_logits: average the folds' logits (imported nnU-Net models) instead of their softmax.
        runtime: what runs the networks, for messages (e.g. ``torch fp32``, ``onnxruntime``).
        tile_batch: tiles per network call (default: as many as fit in 2^17 voxels, at most 32; see
            :func:`~sauronnet.inference.sliding_window.tiles_per_call`). The logits do not depend on it beyond
            float rounding.
        workers: network calls run at once on threads (see :func:`sliding_window`); the logits do not depend on it.
    """

    def __init__(self, networks: Sequence[Network], plans: Plans, configuration: str, step: float = 0.5,
                 mirror: bool = True, keep_largest_component: Sequence[int] = (),
                 allowed_mirror_axes: Sequence[int] | None = None, average_logits: bool = False,
                 runtime: str = "", tile_batch: int | None = None, workers: int = 1):
        if not networks:
            raise ValueError("a predictor needs at least one network")
        if not 0 < step <= 1:
            raise ValueError(f"step must be in (0, 1], got {step}")
        self.networks, self.plans, self.configuration = list(networks), plans, configuration
        self.config = plans.configuration(configuration)
        self.step = step
        if tile_batch is not None and tile_batch < 1:
            raise ValueError(f"tile_batch must be at least 1, got {tile_batch}")
        self.tile_batch = tiles_per_call(self.config.patch_size) if tile_batch is None else tile_batch
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self._pool: Workers | None = None  # created at the first case, kept for the next
        allowed = tuple(range(self.config.network.dim)) if allowed_mirror_axes is None else allowed_mirror_axes
        self.mirror_axes = tuple(allowed) if mirror else ()
        self.keep_largest_component = tuple(keep_largest_component)
        self.average_logits = average_logits
        self.runtime = runtime or getattr(self.networks[0], "name", type(self.networks[0]).__name__)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, folds: Sequence[str] | None = None, checkpoint: str = "final",
                       step: float = 0.5, mirror: bool = True, device: str = "cpu",
                       postprocess: bool = True, precision: str = "fp32") -> Predictor:
        """A training folder's folds in torch; see :func:`sauronnet.inference.loading.load_predictor`."""
        from sauronnet.inference.loading import load_predictor
        return load_predictor(Path(model_dir), folds, checkpoint, step, mirror, device, postprocess, precision,
                              backend="torch")

    def predict_preprocessed(self, data: np.ndarray) -> np.ndarray:
        """Mean softmax over the folds for a preprocessed case: float32 (C, z, y, x) → (K, z, y, x).

        With ``average_logits`` (imported nnU-Net models): the folds' mean logits instead.
        """
        x = np.ascontiguousarray(data, dtype=np.float32)
        patch = self.config.patch_size
        probs = None
        if self._pool is None or self._pool.count != self.workers:
            self._pool = Workers(self.workers, getattr(self.networks[0], "worker_init", None))
        for net in self.networks:
            window = sliding_window_slices if self.config.network.dim == 2 else sliding_window
            logits = window(net, x, patch, self.step, True, self.mirror_axes, self.tile_batch, self._pool)
            p = logits if self.average_logits else softmax(logits)
            probs = p if probs is None else probs + p
        probs /= len(self.networks)
        return probs

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
