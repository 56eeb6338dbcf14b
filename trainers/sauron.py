"""The Sauron trainer: the standard trainer plus the clustering term and threshold-driven channel removal.

It overrides only the loss (:meth:`SauronTrainer.compute_loss` adds λ · mean δ_opt over the prunable layers),
the end of an epoch (:meth:`SauronTrainer.on_epoch_end`: advance every layer's threshold schedule, remove the
channels whose δ_prune is below it, cut the optimizer state, record widths), and the checkpoint extras
(schedule states). Layer outputs are captured by forward hooks on the prunable modules; δ_prune is computed
from the last ``prune_batches`` training batches of each epoch only.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from sauronnet.atomic import write_text_atomic
from sauronnet.networks.complexity import measure, unpruned_like
from sauronnet.networks.unet import UNet
from sauronnet.pruning.distances import delta_opt, delta_prune
from sauronnet.pruning.optim_state import slice_optimizer_state
from sauronnet.pruning.schedule import (LayerState, SauronSettings, advance, losses_converged, record_pruning,
                                        threshold)
from sauronnet.pruning.surgery import remove_channels
from sauronnet.serialization import to_jsonable, write_json_atomic
from trainers.base import Trainer, TrainerConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SauronConfig(TrainerConfig):
    """:class:`TrainerConfig` plus the paper's constants (see :class:`SauronSettings`)."""

    lam: float = SauronSettings.lam
    tau0: float = SauronSettings.tau0
    tau_max: float = SauronSettings.tau_max
    kappa: int = SauronSettings.kappa
    rho: int = SauronSettings.rho
    mu: float = SauronSettings.mu
    pool: int = SauronSettings.pool
    #: δ_prune is averaged over this many last training batches of each epoch
    prune_batches: int = 1

    @property
    def sauron(self) -> SauronSettings:
        names = {f.name for f in fields(SauronSettings)}
        return SauronSettings(**{k: v for k, v in asdict(self).items() if k in names})


class SauronTrainer(Trainer):
    name = "SauronTrainer"
    config_class = SauronConfig

    def __init__(self, *args, **kwargs):
        self._maps: dict[str, torch.Tensor] = {}
        self._hooks: list = []
        self._scores: dict[str, list[torch.Tensor]] = {}
        self._references: dict[str, int] = {}
        super().__init__(*args, **kwargs)
        self.layer_states = {name: LayerState() for name in self.network.widths()}

    # ---- feature maps ----------------------------------------------------------------------------------------
    def build_network(self, widths: dict[str, int] | None = None) -> UNet:
        net = super().build_network(widths)
        for h in self._hooks:
            h.remove()
        self._hooks = [net.layer(name).register_forward_hook(self._capture(name)) for name in net.widths()]
        return net

    def _capture(self, name: str):
        def hook(module, inputs, output):
            if module.training:
                self._maps[name] = output
        return hook

    # ---- loss ------------------------------------------------------------------------------------------------
    def compute_loss(self, outputs, target: torch.Tensor) -> torch.Tensor:
        loss = self.loss(outputs, target)
        terms = [d for d in (delta_opt(m, self.config.pool) for m in self._maps.values()) if d is not None]
        if terms:
            loss = loss + self.config.lam * torch.stack(terms).mean()
        if self.batch_index >= self.config.iterations_per_epoch - self.config.prune_batches:
            self._collect_scores()
        self._maps = {}
        return loss

    def _collect_scores(self) -> None:
        for name, m in self._maps.items():
            if name not in self._references:
                # one reference per layer and epoch, drawn from a generator tied to (seed, epoch, layer)
                layer = list(self.layer_states).index(name)
                rng = np.random.RandomState(np.random.SeedSequence(
                    [self.config.seed, self.epoch, layer]).generate_state(1)[0])
                self._references[name] = int(rng.randint(m.shape[1]))
            self._scores.setdefault(name, []).append(delta_prune(m.detach(), self._references[name],
                                                                 self.config.pool).cpu())

    # ---- pruning ---------------------------------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        s = self.config.sauron
        train = [h["train_loss"] for h in self.history] + [metrics["train_loss"]]
        val = [h["val_loss"] for h in self.history] + [metrics["val_loss"]]
        losses_ok = losses_converged(train, val, s.rho)
        report = {}
        widths_before = self.network.widths()
        for name in widths_before:
            state = advance(self.layer_states[name], losses_ok, s)
            tau = threshold(state, s)
            removed = 0
            if name in self._scores:
                score = torch.stack(self._scores[name]).mean(0)
                k = self._references[name]
                prune = (score < tau) & (torch.arange(score.numel()) != k)
                removed = int(prune.sum())
                if removed:
                    group = next(g for g in self.network.prunable_groups() if g.name == name)
                    slices = remove_channels(self.network, group, torch.nonzero(~prune).flatten())
                    slice_optimizer_state(self.optimizer, slices)
            self.layer_states[name] = record_pruning(state, widths_before[name], removed)
            report[name] = {"tau": tau, "patience": state.patience, "width": widths_before[name] - removed,
                            "removed": removed}
        self._scores, self._references = {}, {}
        metrics["sauron"] = report
        total = sum(r["removed"] for r in report.values())
        if total:
            logger.info("epoch %d: Sauron removed %d channels; %d remain", epoch, total,
                        sum(r["width"] for r in report.values()))

    # ---- summary ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, progress: bool = True, init_from=None) -> dict:
        """Trains, validates, and adds parameters/FLOPs before and after pruning to the returned summary
        (also written to ``pruning_summary.json``)."""
        summary = super().fit(resume, progress, init_from)
        before = measure(unpruned_like(self.network), self.cfg.patch_size)
        after = measure(self.network, self.cfg.patch_size)
        summary["pruning"] = {
            "parameters_before": before.parameters, "parameters_after": after.parameters,
            "flops_before": before.flops, "flops_after": after.flops,
            "flops_removed_fraction": 1 - after.flops / before.flops,
            "parameters_removed_fraction": 1 - after.parameters / before.parameters,
            "widths": self.network.widths(),
        }
        write_json_atomic(self.output_dir / "pruning_summary.json", summary["pruning"])
        logger.info("Sauron: parameters %d -> %d (-%.1f %%), forward FLOPs %.3g -> %.3g (-%.1f %%)",
                    before.parameters, after.parameters, 100 * summary["pruning"]["parameters_removed_fraction"],
                    before.flops, after.flops, 100 * summary["pruning"]["flops_removed_fraction"])
        return summary

    # ---- checkpoints and outputs -----------------------------------------------------------------------------
    def checkpoint_extras(self) -> dict:
        return {"layer_states": {k: asdict(v) for k, v in self.layer_states.items()}}

    def load_checkpoint_extras(self, extras: dict) -> None:
        self.layer_states = {k: LayerState(**v) for k, v in extras["layer_states"].items()}

    def _write_metrics(self) -> None:
        super()._write_metrics()
        write_text_atomic(self.output_dir / "pruning.jsonl", "".join(
            json.dumps(to_jsonable({"epoch": h["epoch"], "layers": h.get("sauron", {})})) + "\n"
            for h in self.history))

    def progress_panels(self) -> list:
        return [_plot_widths]


def _plot_widths(ax, history) -> None:
    names = list(history[-1].get("sauron", {}))
    epochs = [h["epoch"] for h in history]
    for name in names:
        ax.plot(epochs, [h.get("sauron", {}).get(name, {}).get("width") for h in history], lw=1)
    total = [sum(r["width"] for r in h.get("sauron", {}).values()) for h in history]
    ax2 = ax.twinx()
    ax2.plot(epochs, total, color="k", lw=2, label="all layers")
    ax2.set_ylabel("total channels")
    ax2.legend(loc="upper right")
    ax.set_ylabel("channels per layer")
