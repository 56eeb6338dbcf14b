"""The standard trainer: nnU-Net's training loop as a short sequence of overridable hooks.

``fit()`` reads top to bottom: per epoch ``learning_rate(epoch)`` (poly decay), ``train_epoch`` (``train_step``
per batch, with ``compute_loss``, ``on_gradients`` before clipping and the optimizer step, ``on_step_end``
after it), ``validate_epoch`` (``validation_step`` per batch), the EMA pseudo-Dice, ``on_epoch_end``, then the
checkpoints, ``write_metrics`` and the plot; after the last epoch ``final_validation`` and ``on_train_end``. A
variant subclasses and overrides a hook or two (pruning methods: :mod:`trainers.pruning`); hyper-parameters
live in :class:`TrainerConfig`, never in ``__init__``.

Outputs (``SAURON_RESULTS/DatasetXXX/TRAINER__PRESET__CONFIG/fold_F/``): ``checkpoint_latest.pth`` (every epoch,
atomic), ``checkpoint_best.pth`` (best EMA pseudo-Dice), ``checkpoint_final.pth``, ``plans.json``,
``dataset.json``, ``metrics.jsonl`` (every epoch), ``progress.png`` (at most every ``plot_interval`` seconds
and after the last epoch), ``validation/summary.json``; ``training.log`` is written by the command line's log
handler.

Distributed runs (torchrun, one process per device; :mod:`sauronnet.distributed`): every rank trains its share of
the global batch through ``DistributedDataParallel`` (:meth:`Trainer.training_model`), the epoch's training loss
is averaged over ranks, rank 0 alone validates and broadcasts the validation figures, and rank 0 alone writes
checkpoints and metrics. State that decides what happens next (widths, schedules, losses, weights, optimizer) is
compared across ranks after every epoch (:meth:`Trainer.state_fingerprints`), and a divergence stops the run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm import tqdm

from sauronnet.atomic import atomic_path, write_text_atomic
from sauronnet.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from sauronnet.data.augmentation import (augmentation_plan, enlarged_patch_size, training_transforms,
                                         validation_transforms)
from sauronnet.data.loader import BatchStream, PatchSampler, WaitTimer
from sauronnet.data.splits import SPLITS_FILE, check_splits
from sauronnet.distributed import (DistributedRunError, World, lost_peer, object_fingerprint,
                                   tensors_fingerprint)
from sauronnet.evaluation import confusion, dice_from_counts, dice_per_class, nanmean
from sauronnet.inference.postprocessing import POSTPROCESSING_FILE, decide_postprocessing
from sauronnet.inference.predictor import Predictor, finish_case
from sauronnet.inference.torch_network import TorchNetwork
from sauronnet.io import read_seg, write_seg
from sauronnet.losses import DeepSupervisionLoss, distillation_loss
from sauronnet.networks.unet import UNet, build_network, default_widths
from sauronnet.paths import Paths
from sauronnet.plans import Plans
from sauronnet.precision import autocast, memory_format, resolve_precision
from sauronnet.progress_plot import plot_progress
from sauronnet.preprocessing.preprocess import check_preprocessed, config_folder, load_case
from sauronnet.pruning.targets import forward_flops
from sauronnet.serialization import from_jsonable, read_json, to_jsonable, write_json_atomic

logger = logging.getLogger(__name__)

EMA_ALPHA = 0.1
#: Plans entries (besides the configuration) that decide what the network sees; --init-from requires them equal.
_PREPROCESSING_PLANS_FIELDS = ("channel_names", "labels", "transpose_forward",
                               "foreground_intensity_properties_per_channel")
#: Configuration entries a fine-tuning run may change (the FLOP estimate follows the batch size).
_TRAINING_ONLY_FIELDS = ("batch_size", "estimated_forward_gflops")


@dataclass(frozen=True)
class TrainerConfig:
    """Hyper-parameters (nnU-Net v2 defaults)."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    initial_lr: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    grad_clip: float = 12.0
    oversample_foreground: float = 0.33
    seed: int = 12345
    #: background augmentation processes; None = one per two CPU cores, at most 8
    num_workers: int | None = None
    #: fp32, bf16 (CPU with native bfloat16) or auto: float16 AMP on CUDA, fp32 on the CPU (bf16 training is
    #: opt-in: as good for the unpruned model, but a bf16-trained demo model lost a class when pruned; README
    #: "Speed on the CPU"); fp64
    #: trains in float64 (slow; for checking that two ways of training compute the same thing)
    precision: str = "auto"
    #: nnU-Net's data augmentation (False: patches are only cropped, at the network's patch size)
    augmentation: bool = True
    #: non-paper, with ``--init-from``: weight of a distillation term, KL(start model ‖ network) of the class
    #: probabilities over the deep-supervision outputs, so that a network fine-tuned or pruned from a trained model
    #: stays close to what that model predicts (0: off)
    distill: float = 0.0

    def __post_init__(self):
        if self.distill < 0:
            raise ValueError(f"distill must be 0 or more, got {self.distill}")


def poly_lr(epoch: int, epochs: int, initial_lr: float, exponent: float = 0.9) -> float:
    """nnU-Net's polynomial decay, set at the start of each epoch."""
    return initial_lr * (1 - epoch / epochs) ** exponent


def resolve_training_precision(requested: str, device: torch.device) -> str:
    """``auto`` trains with float16 AMP on CUDA and in fp32 on the CPU; ``bf16`` needs native bfloat16; ``fp64``
    trains in float64."""
    if requested == "fp64":
        return "fp64"
    if requested == "auto" and device.type == "cpu":
        return "fp32"
    return resolve_precision(requested, device, training=True)


def default_workers(processes_per_node: int = 1) -> int:
    """Augmentation workers per training process that leave torch the cores it needs (1 on a 2-core machine)."""
    return max(1, min(8, (os.cpu_count() or 2) // (2 * processes_per_node)))


def output_folder(paths: Paths, plans: Plans, trainer_name: str, configuration: str, fold: str) -> Path:
    """``RESULTS/DatasetXXX/TRAINER__PRESET__CONFIG/fold_F``."""
    return paths.results / plans.dataset_name / f"{trainer_name}__{plans.preset}__{configuration}" / f"fold_{fold}"


def _rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "python": [py_state[0], list(py_state[1]), py_state[2]]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


class Trainer:
    """nnU-Net's standard trainer.

    Args:
        plans: the dataset's plans.
        configuration: e.g. ``3d_fullres``.
        fold: ``"0"``..``"4"`` or ``"all"`` (train on every case, validate on the same cases).
        paths: data roots.
        config: hyper-parameters.
        device: ``cpu`` or ``cuda`` (``cuda:LOCAL_RANK`` in a distributed run).
        world: this process's place in a distributed run (default: the only process); the process group must
            be open (:func:`sauronnet.distributed.start`).
    """

    name = "Trainer"
    config_class = TrainerConfig
    #: seconds between two drawings of ``progress.png`` (always drawn after the last epoch): drawing it after
    #: every epoch cost ~0.5-1 s, a third of a 5-iteration epoch of a small network
    plot_interval = 30.0

    def __init__(self, plans: Plans, configuration: str, fold: str, paths: Paths, config: TrainerConfig,
                 device: str | torch.device = "cpu", world: World | None = None):
        self.plans, self.configuration, self.fold, self.paths = plans, configuration, str(fold), paths
        self.config, self.device = config, torch.device(device)
        self.cfg = plans.configuration(configuration)
        self.world = (world or World()).with_batch(self.cfg.batch_size)
        self._ddp: torch.nn.parallel.DistributedDataParallel | None = None
        self.output_dir = output_folder(paths, plans, self.name, configuration, self.fold)
        self.data_folder = config_folder(paths.preprocessed / plans.dataset_name, plans.preset, configuration)
        self.train_ids, self.val_ids = self._split()
        check_preprocessed(self.data_folder, sorted(set(self.train_ids) | set(self.val_ids)),
                           f"sauron_plan_and_preprocess -d {plans.dataset_name} --preset {plans.preset} -c "
                           f"{configuration}")
        self.labels = sorted(v for v in plans.labels.values() if v != 0)
        torch.manual_seed(config.seed)  # the run's own random state (checkpointed with it); weights use a fork
        self.precision = resolve_training_precision(config.precision, self.device)
        self.dtype = torch.float64 if self.precision == "fp64" else torch.float32
        self.memory_format = memory_format(self.device, self.precision, self.cfg.network.dim)
        self.network = self._place(self.build_network())
        #: the start model (``--init-from``) that ``config.distill`` keeps the network close to; None: no such term
        self.teacher: UNet | None = None
        self.loss = self.build_loss()
        self.optimizer = self.configure_optimizers()
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "amp" else None
        self.epoch = 0
        self.ema_dice: float | None = None
        self.best_ema = -math.inf
        self.history: list[dict] = []
        self._plotted_at = -math.inf

    # ---- data ------------------------------------------------------------------------------------------------
    def _split(self) -> tuple[list[str], list[str]]:
        if not self.data_folder.is_dir():
            raise FileNotFoundError(f"{self.data_folder}: no preprocessed data; run sauron_plan_and_preprocess -d "
                                    f"{self.plans.dataset_name} --preset {self.plans.preset} -c {self.configuration}")
        all_ids = sorted(p.name[:-5] for p in self.data_folder.glob("*.json"))
        if self.fold == "all":
            return all_ids, all_ids
        splits_path = self.paths.preprocessed / self.plans.dataset_name / SPLITS_FILE
        if not splits_path.is_file():
            raise FileNotFoundError(f"{splits_path}: no cross-validation splits (fewer than 5 cases?); train fold "
                                    "'all' or provide splits_final.json")
        splits = check_splits(splits_path, all_ids)
        k = int(self.fold)
        if not 0 <= k < len(splits):
            raise ValueError(f"fold {k} does not exist: {splits_path} has {len(splits)} folds")
        return list(splits[k].train), list(splits[k].val)

    def make_streams(self) -> tuple[BatchStream, BatchStream | None]:
        """Training (augmented, in worker processes; this rank's share of each global batch) and validation (no
        augmentation, in-process, whole batches; rank 0 only, else None) batches."""
        aug = augmentation_plan(self.cfg.patch_size)
        bs, c = self.cfg.batch_size, self.config
        size = enlarged_patch_size(self.cfg.patch_size, aug) if c.augmentation else tuple(self.cfg.patch_size)
        transforms = training_transforms(self.cfg.patch_size, aug) if c.augmentation else validation_transforms()
        train = PatchSampler(self.data_folder, self.train_ids, size, bs, c.oversample_foreground)
        workers = c.num_workers if c.num_workers is not None else default_workers(self.world.local_size)
        train_stream = BatchStream(train, transforms, c.seed, 0, workers, positions=self.world.positions)
        if not self.world.is_main:
            return train_stream, None
        val = PatchSampler(self.data_folder, self.val_ids, tuple(self.cfg.patch_size), bs, c.oversample_foreground)
        return train_stream, BatchStream(val, validation_transforms(), c.seed, 1, 0)

    # ---- hooks -----------------------------------------------------------------------------------------------
    def initial_widths(self) -> dict[str, int] | None:
        """Per-layer widths of the network trained from scratch (None: the plan's)."""
        return None

    def build_network(self, widths: dict[str, int] | None = None) -> UNet:
        """The network at ``widths`` (a checkpoint's), else at :meth:`initial_widths`, freshly initialised."""
        return build_network(self.cfg.network, len(self.plans.channel_names), self.plans.num_classes,
                             widths if widths is not None else self.initial_widths(), deep_supervision=True,
                             seed=self.config.seed)

    def network_flops(self, widths: dict[str, int] | None) -> int:
        """Forward FLOPs (one patch, batch 1) of this plan's network at ``widths`` (None: the planned widths)."""
        return forward_flops(self.cfg.network, len(self.plans.channel_names), self.plans.num_classes, widths,
                             self.cfg.patch_size)

    def build_loss(self) -> DeepSupervisionLoss:
        return DeepSupervisionLoss(self.cfg.network.n_stages - 1, self.cfg.batch_dice)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(self.network.parameters(), lr=c.initial_lr, momentum=c.momentum,
                               weight_decay=c.weight_decay, nesterov=True)

    def compute_loss(self, outputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """The training objective on this rank's share of the batch (see :mod:`sauronnet.losses`); the Sauron
        trainer adds its clustering term here."""
        return self.loss(outputs, target, self.world)

    def _place(self, network: UNet) -> UNet:
        """``network`` on the run's device, in its dtype and memory format."""
        return network.to(self.device, self.dtype, memory_format=self.memory_format)

    def training_model(self) -> torch.nn.Module:
        """What the training forward calls: the network, wrapped in ``DistributedDataParallel`` in a distributed
        run. A new wrapper is made whenever the network or its widths changed (pruning, a restored checkpoint):
        DDP's gradient buckets are sized at construction, so a wrapper never sees its parameters change."""
        if not self.world.distributed:
            return self.network
        widths = self.network.widths()
        if self._ddp is None or self._ddp.module is not self.network or self._ddp_widths != widths:
            self._ddp = None  # release the old wrapper's gradient hooks before the new one registers its own
            # every parameter gets a gradient in every step (see DeepSupervisionLoss), so no unused-parameter search
            self._ddp = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self._ddp_widths = widths
        return self._ddp

    def _forward(self, data: torch.Tensor, model: torch.nn.Module | None = None) -> list[torch.Tensor]:
        """``model`` (default: the bare network) in the run's precision and memory format; the outputs come back
        float32 (float64 under fp64) so that the loss (and Sauron's distances, on the captured maps) is computed
        in float32."""
        with autocast(self.device, self.precision):
            outputs = (model or self.network)(data.to(self.dtype).contiguous(memory_format=self.memory_format))
        return [o.to(self.dtype) for o in outputs]

    def train_step(self, batch: dict) -> dict[str, float]:
        data = torch.from_numpy(batch["data"]).to(self.device, non_blocking=True)
        target = torch.from_numpy(batch["seg"]).to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self._forward(data, self.training_model())
        loss = self.compute_loss(outputs, target)
        if self.teacher is not None:
            with torch.no_grad():
                teacher_outputs = self._forward(data, self.teacher)
            # a mean over this rank's samples: weighted by its share of the global batch, as the cross-entropy
            loss = loss + self.config.distill * self.world.share * distillation_loss(outputs, teacher_outputs,
                                                                                       self.loss.weights)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self.on_gradients()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.on_gradients()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.config.grad_clip)
            self.optimizer.step()
        self.on_step_end()
        return {"loss": float(loss.detach())}

    def on_gradients(self) -> None:
        """Called with the step's (unscaled) gradients before clipping and the optimizer step."""

    def on_step_end(self) -> None:
        """Called after the optimizer step."""

    @torch.no_grad()
    def validation_step(self, batch: dict) -> dict[str, Any]:
        data = torch.from_numpy(batch["data"]).to(self.device)
        target = torch.from_numpy(batch["seg"]).to(self.device)
        outputs = self._forward(data)
        loss = self.loss(outputs, target)
        pred = outputs[0].argmax(1).cpu().numpy()
        ref = target[:, 0].cpu().numpy()
        counts = {c: confusion(pred, ref, c) for c in self.labels}
        return {"loss": float(loss), "counts": counts}

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (nnU-Net's poly decay)."""
        c = self.config
        return poly_lr(epoch, c.epochs, c.initial_lr, c.poly_exponent)

    def train_epoch(self, epoch: int, batches: Iterable[dict], progress: bool = True) -> float:
        """Runs :meth:`train_step` over the epoch's training batches; returns their mean loss."""
        n = self.config.iterations_per_epoch
        losses = []
        bar = tqdm(batches, total=n, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not progress,
                   unit="it", leave=False)
        for batch in bar:
            losses.append(self.train_step(batch)["loss"])
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        return float(np.mean(losses))

    def validate_epoch(self, epoch: int, batches: Iterable[dict]) -> tuple[float, dict[str, float]]:
        """Runs :meth:`validation_step` over the validation batches; returns (mean loss, pseudo-Dice per class)."""
        losses, counts = [], {k: np.zeros(3) for k in self.labels}
        for batch in batches:
            out = self.validation_step(batch)
            losses.append(out["loss"])
            for k, v in out["counts"].items():
                counts[k] += v
        return float(np.mean(losses)), {str(k): dice_from_counts(*counts[k]) for k in self.labels}

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        """Called after validation, before checkpointing; ``metrics`` may be extended."""

    def training_done(self) -> bool:
        """Checked before each epoch: True ends training early (the standard trainer runs every epoch)."""
        return False

    def check_last_epoch_end(self, val_stream: BatchStream | None) -> None:
        """After the last epoch, before the final checkpoint: what ``on_epoch_end`` changed after the last
        validation can be checked here (the pruning trainers validate the network their last removals left)."""

    def validate_on(self, epoch: int, val_stream: BatchStream | None) -> tuple[float, dict[str, float]] | None:
        """:meth:`validate_epoch` on epoch ``epoch``'s validation batches (the same at every call; rank 0 validates,
        every rank gets its figures)."""
        self.network.eval()
        validation = (self.validate_epoch(epoch, val_stream.batches(epoch, self.config.val_iterations))
                      if val_stream is not None else None)
        return self.world.broadcast(validation)

    def checkpoint_extras(self) -> dict:
        """Trainer-specific state to store in the checkpoint (plain containers and tensors)."""
        return {}

    def state_fingerprints(self) -> dict[str, int]:
        """Fingerprints of the state that must be identical on every rank of a distributed run after an epoch:
        widths, the trainer's schedules, the losses it decides on, weights and optimizer state."""
        last = self.history[-1] if self.history else {}
        return {"widths": object_fingerprint(self.network.widths()),
                "schedule state": object_fingerprint(to_jsonable(self.checkpoint_extras())),
                "losses": object_fingerprint([last.get("train_loss"), last.get("val_loss"), self.ema_dice]),
                "weights": tensors_fingerprint(self.network.state_dict().values()),
                "optimizer state": tensors_fingerprint(
                    t for state in self.optimizer.state.values() for t in state.values()
                    if isinstance(t, torch.Tensor))}

    def load_checkpoint_extras(self, extras: dict) -> None:
        """Restores what :meth:`checkpoint_extras` stored."""

    def progress_panels(self) -> list:
        """Extra plot panels: callables ``f(ax, history)``; the Sauron trainer adds remaining channels."""
        return []

    # ---- checkpoints -----------------------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return make_checkpoint(
            self.name, self.plans, self.configuration, self.fold, self.network.widths(), self.network.state_dict(),
            optimizer=self.optimizer.state_dict(),
            grad_scaler=self.scaler.state_dict() if self.scaler is not None else None,
            trainer_config=asdict(self.config), epoch=self.epoch, ema_dice=self.ema_dice,
            best_ema=self.best_ema if math.isfinite(self.best_ema) else None, history=self.history,
            rng=_rng_state(), extras=self.checkpoint_extras())

    def save(self, name: str) -> Path:
        """Writes ``checkpoint_NAME.pth`` (rank 0 of a distributed run; the others hold the same state)."""
        path = self.output_dir / f"checkpoint_{name}.pth"
        if self.world.is_main:
            save_checkpoint(self.checkpoint(), path)
        return path

    def read_checkpoint(self, path: Path) -> dict:
        """A checkpoint as rank 0 reads it, on every rank (the other nodes of a multi-node run need no copy)."""
        ckpt = load_checkpoint(path, torch.device("cpu")) if self.world.is_main else None
        return self.world.broadcast(ckpt)

    def restore(self, path: Path) -> None:
        """Continues from a checkpoint: network (rebuilt with its widths), optimizer, epoch, EMA, RNG, extras.

        A distributed run may continue on another number of processes: its global batch, and every sample in it,
        does not depend on how many processes share it.
        """
        ckpt = self.read_checkpoint(path)
        if ckpt["trainer"] != self.name or ckpt["configuration"] != self.configuration:
            raise ValueError(f"{path} was written by {ckpt['trainer']} ({ckpt['configuration']}), not "
                             f"{self.name} ({self.configuration})")
        self.load_weights(ckpt)
        if self.scaler is not None and ckpt["grad_scaler"] is not None:
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        self.epoch, self.ema_dice = int(ckpt["epoch"]), ckpt["ema_dice"]
        self.best_ema = ckpt["best_ema"] if ckpt["best_ema"] is not None else -math.inf
        self.history = list(ckpt["history"])
        _set_rng_state(ckpt["rng"])
        self.load_checkpoint_extras(ckpt["extras"])
        logger.info("continuing from %s at epoch %d", path, self.epoch)
        before = self.history[-1].get("processes", 1) if self.history else self.world.size
        if before != self.world.size:
            logger.info("the run continues on %d processes (it trained on %d): the global batch of %d and its "
                        "samples are unchanged", self.world.size, before, self.cfg.batch_size)

    def load_weights(self, state: dict) -> None:
        """Network and optimizer from ``state`` (a checkpoint's ``widths``, ``state_dict`` and ``optimizer``):
        the network is rebuilt when its widths differ (a pruned model, or one rewound to before a pruning)."""
        if state["widths"] != self.network.widths():
            self.network = self._place(self.build_network(state["widths"]))
            self.optimizer = self.configure_optimizers()
        self.network.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])

    def initialize_from(self, path: Path) -> dict:
        """Starts from the weights of another model's checkpoint (an imported nnU-Net model, or any SauronNet
        one, pruned or not): the network takes its widths and weights; optimizer, epoch and schedules start fresh.

        Raises:
            ValueError: if that model's network or preprocessing differs from this trainer's plans (its weights
                would see differently prepared data); the message lists the differing entries.
        """
        ckpt = self._start_checkpoint(path)
        self.network = self._place(self.build_network(ckpt["widths"]))
        self.network.load_state_dict(ckpt["state_dict"])
        self.optimizer = self.configure_optimizers()
        logger.info("initialised from %s (%s, %d of %d channels)", path, ckpt["trainer"],
                    sum(ckpt["widths"].values()), sum(default_widths(self.cfg.network).values()))
        return ckpt

    def _start_checkpoint(self, path: Path) -> dict:
        """The checkpoint at ``path``, checked to be planned like this trainer's data (see :meth:`initialize_from`)."""
        ckpt = self.read_checkpoint(path)
        source = from_jsonable(Plans, ckpt["plans"], where=f"{path} plans")
        differ = [f"configuration {f.name}" for f in fields(self.cfg) if f.name not in _TRAINING_ONLY_FIELDS
                  and getattr(self.cfg, f.name) != getattr(source.configuration(ckpt["configuration"]), f.name)]
        differ += [f.name for f in fields(self.plans) if f.name in _PREPROCESSING_PLANS_FIELDS
                   and getattr(self.plans, f.name) != getattr(source, f.name)]
        if differ:
            raise ValueError(f"{path} was planned differently from {self.plans.dataset_name}'s {self.plans.preset} "
                             f"plans ({', '.join(differ)}); preprocess the dataset with that model's plans: "
                             f"sauron_plan_and_preprocess -d {self.plans.dataset_name} --plans {path.parent}")
        return ckpt

    def load_teacher(self, path: Path | None, ckpt: dict | None = None) -> None:
        """The frozen start model of ``config.distill`` (also when resuming: checkpoints do not store it); ``ckpt``:
        that model's checkpoint when :meth:`initialize_from` has just read it.

        Raises:
            ValueError: without ``path``.
        """
        if path is None:
            raise ValueError(f"--distill {self.config.distill} keeps the network close to the model it started from: "
                             "give that model with --init-from MODEL_DIR (with --continue too: the same one)")
        ckpt = ckpt if ckpt is not None else self._start_checkpoint(Path(path))
        # the module-level builder: a trainer's build_network may hook the network it builds (Sauron's maps)
        teacher = build_network(self.cfg.network, len(self.plans.channel_names), self.plans.num_classes,
                                ckpt["widths"], deep_supervision=True)
        teacher.load_state_dict(ckpt["state_dict"])
        self.teacher = self._place(teacher).eval().requires_grad_(False)
        logger.info("distillation from %s, weight %g (non-paper)", path, self.config.distill)

    # ---- the loop --------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, progress: bool = True, init_from: Path | None = None) -> dict:
        """Trains to ``config.epochs``, then validates the fold's cases; returns the validation summary.

        Args:
            resume: continue from ``checkpoint_latest.pth`` if there is one.
            init_from: a checkpoint whose weights start the training (ignored when resuming, whose checkpoint
                already holds them); see :meth:`initialize_from`.
        """
        main = self.world.is_main
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.output_dir.glob(".checkpoint_*"):
                stale.unlink()  # a write that a kill interrupted
        latest = self.output_dir / "checkpoint_latest.pth"
        start = None  # the start model's checkpoint, read once for the weights and the distillation
        if resume and self.world.broadcast(latest.is_file()):
            self.restore(latest)
        else:
            if resume:
                logger.warning("--continue: no checkpoint_latest.pth in %s, starting from scratch", self.output_dir)
            if init_from is not None:
                start = self.initialize_from(Path(init_from))
        if self.config.distill:
            self.load_teacher(init_from, start)
        if main:
            self._write_run_files()
        train_stream, val_stream = self.make_streams()
        try:
            while self.epoch < self.config.epochs and not self.training_done():
                self._run_epoch(train_stream, val_stream, progress and main)
            self.check_last_epoch_end(val_stream)
        except RuntimeError as e:
            if not (self.world.distributed and lost_peer(e)):
                raise
            raise DistributedRunError(
                f"rank {self.world.rank} of {self.world.size} stopped in epoch {self.epoch}: another training process "
                f"died, was killed or stopped answering ({str(e).splitlines()[0][:300]}). {self.output_dir}/"
                f"checkpoint_latest.pth holds the last completed epoch; resume with the same launch command plus "
                "--continue (on any number of processes)") from e
        finally:
            train_stream.close()
            if val_stream is not None:
                val_stream.close()
        self._ddp = None
        self.save("final")
        if not main:
            return {}  # rank 0 validates; no collective follows, so no rank waits through it
        self.draw_progress(force=True)
        return self.on_train_end(self.final_validation(progress))

    def on_train_end(self, summary: dict) -> dict:
        """After the final validation: may add to (and write next to) the validation summary it returns."""
        return summary

    def _run_epoch(self, train_stream: BatchStream, val_stream: BatchStream, progress: bool) -> None:
        c, epoch = self.config, self.epoch
        t0 = time.perf_counter()
        lr = self.learning_rate(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.network.train()
        batches = WaitTimer(train_stream.batches(epoch, c.iterations_per_epoch))
        train_loss = self.world.mean(self.train_epoch(epoch, batches, progress))
        val_loss, dice = self.validate_on(epoch, val_stream)
        mean_dice = nanmean(dice.values())
        if math.isfinite(mean_dice):
            previous = mean_dice if self.ema_dice is None else self.ema_dice
            self.ema_dice = (1 - EMA_ALPHA) * previous + EMA_ALPHA * mean_dice
        metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                   "pseudo_dice": dice, "ema_pseudo_dice": self.ema_dice, "lr": lr, "processes": self.world.size,
                   "data_wait": batches.seconds}
        self.on_epoch_end(epoch, metrics)
        metrics["epoch_time"] = time.perf_counter() - t0
        self.history.append(metrics)
        self.epoch = epoch + 1
        if self.world.distributed:
            self.world.check_identical(self.state_fingerprints(), f"after epoch {epoch}")
        improved = self.ema_dice is not None and self.ema_dice > self.best_ema
        if improved:
            self.best_ema = self.ema_dice
        self.save("latest")
        if not self.world.is_main:
            return
        if improved:
            with atomic_path(self.output_dir / "checkpoint_best.pth") as tmp:
                shutil.copyfile(self.output_dir / "checkpoint_latest.pth", tmp)
        self.write_metrics()
        self.draw_progress()
        logger.info("epoch %d: train loss %.4f, val loss %.4f, pseudo-Dice %s, EMA %.4f, lr %.5f, %.1f s "
                    "(%.1f s waiting for training batches)", epoch, metrics["train_loss"], metrics["val_loss"],
                    {k: round(v, 4) for k, v in dice.items()}, self.ema_dice or float("nan"), lr,
                    metrics["epoch_time"], metrics["data_wait"])

    # ---- outputs ---------------------------------------------------------------------------------------------
    def _write_run_files(self) -> None:
        self.plans.save(self.output_dir / "plans.json")
        src = self.paths.preprocessed / self.plans.dataset_name / "dataset.json"
        if src.is_file():
            shutil.copyfile(src, self.output_dir / "dataset.json")

    def write_metrics(self) -> None:
        """Writes ``metrics.jsonl`` after every epoch; variants add their own files."""
        write_text_atomic(self.output_dir / "metrics.jsonl",
                          "".join(json.dumps(to_jsonable(m)) + "\n" for m in self.history))

    def draw_progress(self, force: bool = False) -> None:
        """Draws ``progress.png`` when ``plot_interval`` seconds have passed since the last drawing (or ``force``)."""
        now = time.monotonic()
        if force or now - self._plotted_at >= self.plot_interval:
            plot_progress(self.history, self.output_dir / "progress.png", self.progress_panels())
            self._plotted_at = now

    def final_validation(self, progress: bool = True) -> dict:
        """Predicts every validation case like ``sauron_predict`` does (sliding window, no TTA), exports it onto
        the case's original grid (``validation/CASE.nii.gz``), scores it against the raw label map, decides
        keep-largest-component postprocessing and writes ``validation/summary.json``.

        Without the raw label map (raw dataset moved), the case is scored on the preprocessed grid instead.
        """
        self.network.eval()
        self.network.deep_supervision = False
        network = TorchNetwork(self.network, self.device, "bf16" if self.precision == "bf16" else "fp32")
        predictor = Predictor([network], self.plans, self.configuration, mirror=False)
        labels_dir = self.paths.raw / self.plans.dataset_name / "labelsTr"
        ending = _file_ending(self.paths.preprocessed / self.plans.dataset_name / "dataset.json")
        out_dir = self.output_dir / "validation"
        per_case, preds, refs = [], [], []
        try:
            for case_id in tqdm(self.val_ids, desc="final validation", disable=not progress, unit="case"):
                data, seg, props = load_case(self.data_folder, case_id, mmap=False)
                probs = predictor.predict_preprocessed(data)
                raw_label = labels_dir / f"{case_id}{ending}"
                if raw_label.is_file():
                    pred = finish_case(probs, props, self.plans, self.cfg).labels
                    ref, _ = read_seg(raw_label)
                    write_seg(pred, props.geometry, out_dir / f"{case_id}{ending}")
                    grid = "original"
                else:
                    pred, ref, grid = probs.argmax(0), np.where(seg[0] < 0, 0, seg[0]), "preprocessed"
                preds.append(pred)
                refs.append(ref)
                per_case.append({"case": case_id, "grid": grid, "dice": {
                    str(k): v for k, v in dice_per_class(pred, ref, self.labels).items()}})
        finally:
            self.network.deep_supervision = True
        mean = {str(k): nanmean(c["dice"][str(k)] for c in per_case) for k in self.labels}
        keep_largest = decide_postprocessing(preds, refs, self.labels)
        write_json_atomic(self.output_dir / POSTPROCESSING_FILE, {"keep_largest_component": keep_largest})
        summary = {"mean_dice": mean, "foreground_mean_dice": nanmean(mean.values()), "cases": per_case,
                   "postprocessing": {"keep_largest_component": keep_largest},
                   "note": "sliding window without TTA, before postprocessing; Dice on each case's original grid "
                           "against labelsTr (or on the preprocessed grid when labelsTr is not available)"}
        write_json_atomic(out_dir / "summary.json", summary)
        return summary


def _file_ending(dataset_json: Path) -> str:
    return read_json(dataset_json)["file_ending"] if dataset_json.is_file() else ".nii.gz"


def with_overrides(config: TrainerConfig, **overrides) -> TrainerConfig:
    """``config`` with the non-None ``overrides`` applied (CLI flags)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
