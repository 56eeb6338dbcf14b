"""What every pruning trainer shares; a method is a small subclass that says which channels go and when.

The standard epoch runs unchanged. At each epoch end :meth:`PruningTrainer.on_epoch_end` asks the method
:meth:`~PruningTrainer.select` for the channels each layer keeps, applies them with one
:func:`sauronnet.pruning.prune.prune_layer` call per layer (surgery and optimizer state together), and records
the layer's width, removals and the method's own figures (:meth:`~PruningTrainer.layer_report`) in the epoch's
metrics. Around that sit ``pruning.jsonl``, the widths panel of ``progress.png`` and ``pruning_summary.json``
(parameters and forward FLOPs before and after, widths, warnings).

A method overrides one or two hooks:

- :meth:`~PruningTrainer.channel_scores`: per layer, one score per channel, higher = more important;
- :meth:`~PruningTrainer.removals`: how many channels each layer loses at this epoch end (methods with a target);
- or :meth:`~PruningTrainer.select` itself (Sauron's thresholds decide per channel, not per count);
- :meth:`~PruningTrainer.apply` (soft pruning zeroes channels and removes them only at the end).

Baselines meet a target given by :class:`MatchConfig`: another pruned model's forward FLOPs (``--match``) or a
fraction of the unpruned FLOPs (``--keep-flops``), reached by the uniform per-layer ratio of
:func:`sauronnet.pruning.targets.match_flops`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator

import torch

from sauronnet.atomic import write_text_atomic
from sauronnet.checkpoint import load_checkpoint
from sauronnet.networks.complexity import measure, unpruned_like
from sauronnet.networks.unet import default_widths
from sauronnet.pruning.criteria import keep_highest
from sauronnet.pruning.prune import prune_layer
from sauronnet.progress_plot import widths_panel
from sauronnet.pruning.targets import forward_flops, match_flops
from sauronnet.serialization import to_jsonable, write_json_atomic
from trainers.base import Trainer, TrainerConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchConfig(TrainerConfig):
    """:class:`TrainerConfig` plus the compression a baseline must reach (exactly one of the two for methods with
    a target)."""

    #: a pruned model (model folder, fold folder or checkpoint) whose result this run matches: its forward FLOPs
    #: (L1, FPGM, C-SGD, uniform width), its removals per epoch and layer (random), its widths (scratch)
    match: str | None = None
    #: the fraction of the unpruned network's forward FLOPs to keep
    keep_flops: float | None = None

    def __post_init__(self):
        if self.match is not None and self.keep_flops is not None:
            raise ValueError("give either match (a pruned model to match) or keep_flops, not both")
        if self.keep_flops is not None and not 0 < self.keep_flops <= 1:
            raise ValueError(f"keep_flops must lie in (0, 1], got {self.keep_flops}")


def match_checkpoint(match: str | Path, fold: str) -> Path:
    """The checkpoint of the model to match: a file, a fold folder, or a model folder (its fold ``fold``, else
    its only fold)."""
    p = Path(match)
    if p.is_file():
        return p
    for candidate in (p / "checkpoint_final.pth", p / f"fold_{fold}" / "checkpoint_final.pth"):
        if candidate.is_file():
            return candidate
    folds = sorted(p.glob("fold_*/checkpoint_final.pth"))
    if len(folds) == 1:
        return folds[0]
    raise FileNotFoundError(f"{p}: no checkpoint_final.pth to match (of fold {fold}, or of a single fold); give "
                            "the pruned model's folder, fold folder or checkpoint")


class TargetMixin:
    """Widths and FLOP targets from :class:`MatchConfig`, for trainers with or without pruning."""

    @cached_property
    def match_checkpoint(self) -> dict:
        if self.config.match is None:
            raise ValueError(f"{self.name} needs a target: --match PRUNED_MODEL (or --keep-flops F)")
        path = match_checkpoint(self.config.match, self.fold)
        ckpt = load_checkpoint(path, torch.device("cpu"))
        if ckpt["configuration"] != self.configuration:
            raise ValueError(f"{path} is a {ckpt['configuration']} model; this run trains {self.configuration}")
        if ckpt["widths"].keys() != default_widths(self.cfg.network).keys():
            raise ValueError(f"{path} has a different network topology from {self.plans.dataset_name}'s "
                             f"{self.plans.preset} {self.configuration} plans")
        ckpt["path"] = str(path)
        return ckpt

    def _flops(self, widths) -> int:
        return forward_flops(self.cfg.network, len(self.plans.channel_names), self.plans.num_classes, widths,
                             self.cfg.patch_size)

    @cached_property
    def target_flops(self) -> int:
        """Forward FLOPs (one patch) to reach: the matched model's, or ``keep_flops`` of the unpruned."""
        if self.config.keep_flops is not None:
            return round(self.config.keep_flops * self._flops(None))
        return self._flops(self.match_checkpoint["widths"])

    @cached_property
    def target_widths(self) -> dict[str, int]:
        """The same fraction of every layer removed, so that the network's forward FLOPs meet the target."""
        widths, flops = match_flops(self.cfg.network, len(self.plans.channel_names), self.plans.num_classes,
                                    self.cfg.patch_size, self.target_flops)
        logger.info("%s target: %.4g forward FLOPs; uniform widths reach %.4g (%+.1f %%)", self.name,
                    self.target_flops, flops, 100 * (flops / self.target_flops - 1))
        return widths


class PruningTrainer(Trainer):
    """The standard trainer that removes channels at epoch ends; see the module docstring for the hooks."""

    name = "PruningTrainer"

    #: training batches at the end of each epoch on which :meth:`observe_batch` is True (for feature-map scores)
    observed_batches = 0

    def __init__(self, *args, **kwargs):
        self.observe_batch = False
        super().__init__(*args, **kwargs)

    # ---- hooks of a method -----------------------------------------------------------------------------------
    def channel_scores(self) -> dict[str, torch.Tensor]:
        """Per prunable layer, (C,) importance scores of its current channels (the lowest go first)."""
        raise NotImplementedError(f"{type(self).__name__} must define channel_scores() or select()")

    def removals(self, epoch: int, metrics: dict) -> dict[str, int]:
        """How many channels each layer loses at the end of ``epoch`` (layers not named lose none)."""
        return {}

    def select(self, epoch: int, metrics: dict) -> dict[str, torch.Tensor]:
        """Per layer that loses channels at this epoch end, the sorted indices of the channels it keeps."""
        counts = {k: n for k, n in self.removals(epoch, metrics).items() if n > 0}
        if not counts:
            return {}
        scores = self.channel_scores()
        return {name: keep_highest(scores[name], n) for name, n in counts.items()}

    def apply(self, epoch: int, keep: dict[str, torch.Tensor]) -> dict[str, int]:
        """Removes the channels not kept; returns the number removed per layer."""
        return {name: prune_layer(self.network, self.optimizer, name, k) for name, k in keep.items()}

    def layer_report(self, name: str) -> dict:
        """The method's own per-layer figures for this epoch's ``pruning.jsonl`` line (Sauron: τ, patience)."""
        return {}

    def warnings(self) -> list[str]:
        """Messages for the summary and the command line about a pruned model that may have gone wrong."""
        return []

    def summary_extras(self) -> dict:
        """Method-specific entries of ``pruning_summary.json``."""
        return {}

    # ---- the shared machinery --------------------------------------------------------------------------------
    def train_epoch(self, epoch: int, batches: Iterable[dict], progress: bool = True) -> float:
        return super().train_epoch(epoch, self._mark_observed(batches), progress)

    def _mark_observed(self, batches: Iterable[dict]) -> Iterator[dict]:
        first = self.config.iterations_per_epoch - self.observed_batches
        for i, batch in enumerate(batches):
            self.observe_batch = i >= first
            yield batch
        self.observe_batch = False

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        before = self.network.widths()
        removed = self.apply(epoch, self.select(epoch, metrics))
        report = metrics["pruning"] = self.pruning_report(before, removed)
        total = sum(removed.values())
        if total:
            logger.info("epoch %d: %s removed %d channels; %d remain", epoch, self.name, total,
                        sum(r["width"] for r in report.values()))

    def pruning_report(self, before: dict[str, int], removed: dict[str, int]) -> dict[str, dict]:
        """The epoch's ``pruning.jsonl`` entry: per layer, the method's figures, its width and its removals."""
        return {name: {**self.layer_report(name), "width": width - removed.get(name, 0),
                       "removed": removed.get(name, 0)} for name, width in before.items()}

    def on_train_end(self, summary: dict) -> dict:
        """Adds parameters and forward FLOPs before and after pruning to the summary (and
        ``pruning_summary.json``)."""
        before = measure(unpruned_like(self.network), self.cfg.patch_size)
        after = measure(self.network, self.cfg.patch_size)
        p = {"method": self.name,
             "parameters_before": before.parameters, "parameters_after": after.parameters,
             "flops_before": before.flops, "flops_after": after.flops,
             "flops_removed_fraction": 1 - after.flops / before.flops,
             "parameters_removed_fraction": 1 - after.parameters / before.parameters,
             "widths": self.network.widths(), "epochs_trained": self.epoch,
             **self.summary_extras(), "warnings": self.warnings()}
        summary["pruning"] = p
        write_json_atomic(self.output_dir / "pruning_summary.json", p)
        logger.info("%s: parameters %d -> %d (-%.1f %%), forward FLOPs %.3g -> %.3g (-%.1f %%)", self.name,
                    before.parameters, after.parameters, 100 * p["parameters_removed_fraction"], before.flops,
                    after.flops, 100 * p["flops_removed_fraction"])
        for w in p["warnings"]:
            logger.warning(w)
        return summary

    def write_metrics(self) -> None:
        super().write_metrics()
        write_text_atomic(self.output_dir / "pruning.jsonl", "".join(
            json.dumps(to_jsonable({"epoch": h["epoch"], "layers": h.get("pruning", {}),
                                    **({"undoes": h["rollback"]["to_epoch"]} if "rollback" in h else {})})) + "\n"
            for h in self.history))

    def progress_panels(self) -> list:
        return [widths_panel]


def pruning_log(model: str | Path, fold: str) -> list[dict]:
    """The ``pruning.jsonl`` lines next to a pruned model's checkpoint (one per epoch). A line with ``undoes: E``
    marks the epoch at which the removals of epoch E's end were undone (Sauron's ``--rollback-drop``)."""
    path = match_checkpoint(model, fold).parent / "pruning.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pruning log; --match needs a model trained by a pruning trainer")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
