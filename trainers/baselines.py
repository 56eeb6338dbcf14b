"""The methods Sauron is compared with, each matched to a target (``--match PRUNED_MODEL`` or ``--keep-flops``).

- :class:`L1Trainer`: Li et al. (ICLR 2017) — one-shot: at the end of epoch ``prune_epoch`` every layer loses
  the same fraction of its filters, smallest kernel L1 norm first; the remaining epochs fine-tune. Meant for a
  trained model (``--init-from``, ``prune_epoch`` 0), as in the paper (prune once, then retrain).
- :class:`FPGMTrainer`: He et al. (CVPR 2019) — gradual and soft, as in the paper: at every epoch end the filters
  nearest the layer's geometric median are set to zero (they may grow back while training continues); at the
  last epoch end the zeroed filters are removed.
- :class:`RandomTrainer`: the matched Sauron run replayed — the same number of channels removed from the same
  layer at the same epoch end — with the channels drawn at random (seeded by run seed, epoch and layer).
- :class:`ScratchTrainer`: the matched model's final widths trained from scratch (no pruning).
- :class:`UniformTrainer`: every width of the plan scaled by one factor so that the forward FLOPs match, trained
  from scratch (what nnU-Net's maintainers suggest to CPU users: a narrower network).
- :class:`trainers.csgd.CSGDTrainer`: Ding et al. (CVPR 2019), the cluster-based method (own module).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sauronnet.pruning.criteria import fpgm_scores, l1_scores, random_scores
from sauronnet.pruning.surgery import filters, zero_channels
from trainers.base import Trainer
from trainers.pruning import MatchConfig, PruningTrainer, TargetMixin, pruning_log


@dataclass(frozen=True)
class OneShotConfig(MatchConfig):
    #: the epoch at whose end the network is pruned (0: right away, for a trained model given by --init-from)
    prune_epoch: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.prune_epoch < self.epochs:
            raise ValueError(f"prune_epoch must lie in 0..epochs-1 ({self.epochs - 1}), got {self.prune_epoch}")


class L1Trainer(TargetMixin, PruningTrainer):
    name = "L1Trainer"
    config_class = OneShotConfig

    def channel_scores(self):
        return {name: l1_scores(filters(self.network, name)) for name in self.network.widths()}

    def removals(self, epoch, metrics):
        if epoch != self.config.prune_epoch:
            return {}
        return {k: w - self.target_widths[k] for k, w in self.network.widths().items()}


class FPGMTrainer(TargetMixin, PruningTrainer):
    name = "FPGMTrainer"
    config_class = MatchConfig

    def channel_scores(self):
        return {name: fpgm_scores(filters(self.network, name)) for name in self.network.widths()}

    def removals(self, epoch, metrics):
        return {k: w - self.target_widths[k] for k, w in self.network.widths().items()}

    def apply(self, epoch, keep):
        if epoch == self.config.epochs - 1:
            return super().apply(epoch, keep)
        for name, k in keep.items():
            zero_channels(self.network, name, _complement(k, self.network.widths()[name]))
        return {}


class RandomTrainer(PruningTrainer):
    name = "RandomTrainer"
    config_class = MatchConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.config.match is None:
            raise ValueError(f"{self.name} replays a pruned run: give --match PRUNED_MODEL (its pruning.jsonl)")
        log = pruning_log(self.config.match, self.fold)
        undone = {line["undoes"] for line in log if "undoes" in line}  # removals the matched run took back
        self.replay = {line["epoch"]: line["layers"] for line in log if line["epoch"] not in undone}

    def channel_scores(self):
        layers = list(self.network.widths())
        return {name: random_scores(w, self.config.seed, self.epoch, layers.index(name))
                for name, w in self.network.widths().items()}

    def removals(self, epoch, metrics):
        return {k: r["removed"] for k, r in self.replay.get(epoch, {}).items()}


class ScratchTrainer(TargetMixin, Trainer):
    name = "ScratchTrainer"
    config_class = MatchConfig

    def initial_widths(self):
        return self.match_checkpoint["widths"]


class UniformTrainer(TargetMixin, Trainer):
    name = "UniformTrainer"
    config_class = MatchConfig

    def initial_widths(self):
        return self.target_widths


def _complement(keep: torch.Tensor, width: int) -> torch.Tensor:
    mask = torch.ones(width, dtype=torch.bool)
    mask[keep] = False
    return torch.nonzero(mask).flatten()


__all__ = ["L1Trainer", "FPGMTrainer", "RandomTrainer", "ScratchTrainer", "UniformTrainer"]
