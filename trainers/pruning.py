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
import math
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
from sauronnet.pruning.targets import match_flops
from sauronnet.serialization import to_jsonable, write_json_atomic
from trainers.base import EMA_ALPHA, Trainer, TrainerConfig

logger = logging.getLogger(__name__)

#: a class counts as learned from the first epoch whose validation pseudo-Dice EMA reaches this fraction of its best
LEARNED_FRACTION = 0.5
#: a class learned only once pruning had removed at least this fraction of the forward FLOPs is reported: the
#: pruned network, not the planned one, learned it (healthy runs on toy64 and the demo set: at most 0.18; the demo
#: run that lost its vessel class: 0.92)
LATE_LEARNING_FLOPS = 0.5
#: a class whose best validation pseudo-Dice EMA stays below this was never learned
NEVER_LEARNED = 0.05
#: the last epoch end's removals are reported when, on the same validation batches, a class's pseudo-Dice falls
#: more than this below what the network had before them (the Sauron trainer's Dice-drop warning uses 0.05 too)
LAST_REMOVALS_DROP = 0.05


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
        super().__post_init__()
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

    @cached_property
    def target_flops(self) -> int:
        """Forward FLOPs (one patch) to reach: the matched model's, or ``keep_flops`` of the unpruned."""
        if self.config.keep_flops is not None:
            return round(self.config.keep_flops * self.network_flops(None))
        return self.network_flops(self.match_checkpoint["widths"])

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
        """Messages for the summary and the command line about a pruned model that may have gone wrong: a class
        the network learned only after pruning had removed much of it, or never learned (methods add their own)."""
        if not any(r["removed"] for h in self.history for r in h.get("pruning", {}).values()):
            return []
        planned = self.network_flops(None)
        messages = self.last_removals_warnings()
        for c, epoch in learned_epochs(self.history).items():
            c = self.class_label(c)
            if epoch is None:
                messages.append(f"class {c} was never learned (its validation pseudo-Dice stayed below "
                                f"{NEVER_LEARNED}) while {self.name} removed channels: the pruned model cannot segment "
                                "it. Check that the class occurs in the training cases; train longer, or prune a "
                                "trained model with --init-from.")
                continue
            at = next(h for h in self.history if h["epoch"] == epoch)
            widths = {k: r["width"] for k, r in at.get("pruning", {}).items()}
            removed = 1 - self.network_flops(widths) / planned if widths else 0.0
            if removed >= LATE_LEARNING_FLOPS:
                messages.append(
                    f"class {c} was learned only at epoch {epoch} (validation pseudo-Dice EMA first at "
                    f"{LEARNED_FRACTION:.0%} of its best), when {self.name} had already removed {removed:.0%} of the "
                    "forward FLOPs: a network pruned before it learned a class may segment that class worse than "
                    "the unpruned one would. Compare with an unpruned model on held-out cases; to be safe, prune a "
                    "trained model with --init-from, or hold pruning until every class is learned "
                    "(SauronTrainer: --hold-until-learned).")
        return messages

    def class_label(self, c: str) -> str:
        """A class as the validation metrics name it (its label value), with the dataset's name for it."""
        names = {str(v): k for k, v in self.plans.labels.items()}
        return f"{c} ({names[c]})" if c in names else c

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

    def check_last_epoch_end(self, val_stream) -> None:
        """An epoch end prunes after its validation, so no validation has seen what the last one's removals left:
        the final network is validated on that epoch's batches again, before the final checkpoint, and
        :meth:`warnings` compares it with the epoch's own validation (``last_removals_pseudo_dice`` in
        ``metrics.jsonl``). A demo-set run whose last epoch end took the head's input block from 5 to 3 channels
        kept pseudo-Dice 0.97 in its last validation and segmented the vessel with Dice 0.000 on every test case."""
        last = self.history[-1] if self.history else {}
        if not any(r["removed"] > 0 for r in last.get("pruning", {}).values()):
            return
        validation = self.validate_on(last["epoch"], val_stream)
        if validation is None:
            return
        last["last_removals_pseudo_dice"] = validation[1]
        if self.world.is_main:
            self.write_metrics()

    def last_removals_warnings(self) -> list[str]:
        """The warning of :meth:`check_last_epoch_end`: the classes whose pseudo-Dice the last removals lowered."""
        last = self.history[-1] if self.history else {}
        after = last.get("last_removals_pseudo_dice")
        if not after:
            return []
        before = last["pseudo_dice"]
        fell = {c: (before[c], v) for c, v in after.items()
                if c in before and math.isfinite(v) and math.isfinite(before[c]) and before[c] - v > LAST_REMOVALS_DROP}
        if not fell:
            return []
        layers = ", ".join(f"{k} {r['width'] + r['removed']} → {r['width']}" for k, r in last["pruning"].items()
                           if r["removed"] > 0)
        classes = ", ".join(f"{self.class_label(c)} {b:.3f} → {a:.3f}" for c, (b, a) in fell.items())
        return [f"the removals of the last epoch end (epoch {last['epoch']}: {layers}) came after its validation; "
                f"validated again on the same batches, the saved network's pseudo-Dice fell (class {classes}): the "
                "final model may have lost what those channels carried. Check it on held-out cases; with "
                "SauronTrainer, --rollback-drop keeps the last epoch ends free of removals so that it checks every "
                "one, and --stop-after ends the run once nothing is removed (README: 'Two ways to a small model')."]

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


def learned_epochs(history: list[dict]) -> dict[str, int | None]:
    """Per foreground class, the first epoch whose validation pseudo-Dice EMA (the trainer's EMA, per class)
    reached :data:`LEARNED_FRACTION` of the class's best EMA; None for a class never learned (best below
    :data:`NEVER_LEARNED`). Epochs in which a class was absent from validation (NaN) leave its EMA as it was."""
    emas: dict[str, list[tuple[int, float]]] = {}
    for h in history:
        for c, v in h.get("pseudo_dice", {}).items():
            if v is not None and math.isfinite(v):
                series = emas.setdefault(c, [])
                series.append((h["epoch"], v if not series else (1 - EMA_ALPHA) * series[-1][1] + EMA_ALPHA * v))
    learned = {}
    for c, series in emas.items():
        best = max(e for _, e in series)
        learned[c] = None if best < NEVER_LEARNED else next(epoch for epoch, e in series
                                                            if e >= LEARNED_FRACTION * best)
    return learned


def pruning_log(model: str | Path, fold: str) -> list[dict]:
    """The ``pruning.jsonl`` lines next to a pruned model's checkpoint (one per epoch). A line with ``undoes: E``
    marks the epoch at which the removals of epoch E's end were undone (Sauron's ``--rollback-drop``)."""
    path = match_checkpoint(model, fold).parent / "pruning.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pruning log; --match needs a model trained by a pruning trainer")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
