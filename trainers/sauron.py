"""The Sauron trainer: a pruning trainer whose loss adds the clustering term and whose thresholds choose.

Over :class:`trainers.pruning.PruningTrainer` it defines the loss (:meth:`SauronTrainer.compute_loss` adds
λ · mean δ_opt over the prunable layers), the selection (:meth:`SauronTrainer.select`: advance every layer's
threshold schedule, keep the channels whose δ_prune reaches it), and the checkpoint extras (schedule states).
Layer outputs are captured by forward hooks on the prunable modules; δ_prune is computed from the last
``prune_batches`` training batches of each epoch only (the base class marks them).

In a distributed run each rank scores its channels on its share of those batches; :meth:`SauronTrainer.select`
averages the scores over the global batch (one all-reduce) before any threshold is applied, and the reference
channel is drawn from (seed, epoch, layer), so every rank removes the same channels.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch

from sauronnet.networks.unet import UNet, default_widths
from sauronnet.pruning.distances import SCORE_MAPS, delta_opt, delta_prune
from sauronnet.pruning.schedule import (VAL_TESTS, LayerState, SauronSettings, advance, losses_converged,
                                        plateau_window, record_pruning, threshold)
from trainers.base import EMA_ALPHA, TrainerConfig
from trainers.pruning import PruningTrainer

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
    #: δ_prune is averaged over this many last training batches of each epoch (the paper: 1)
    prune_batches: int = 1
    #: how δ_prune sees the maps (sauronnet.pruning.distances.SCORE_MAPS): "zscore", standardised maps as the
    #: reference network's norm without affine made them; "minmax", the clustering term's view, which makes sparse
    #: maps (thin structures) look alike; or "raw", the reference code's rule, which with our affine norms sees
    #: every channel's γ and β
    score_maps: str = "zscore"
    #: the schedule's validation-loss test: "intended" or "reference" (always passes, as the paper ran it)
    val_test: str = "intended"
    #: non-paper: stop early once every layer's threshold has been at τ_max, and no channel has been removed,
    #: for this many epochs (None: train all epochs, as the paper does)
    stop_after: int | None = None
    #: non-paper: pause the schedule (no τ step, no removal) in epochs whose EMA pseudo-Dice lies more than this
    #: below its best (None: never, as the paper)
    dice_guard: float | None = None
    #: non-paper: no threshold step and no removal until every foreground class's validation pseudo-Dice EMA has
    #: reached this once, so that no class is learned by an already-pruned network (None: never hold, as the paper)
    hold_until_learned: float | None = None
    #: non-paper: for this many first epochs the clustering term acts alone (no threshold step, no removal), so
    #: that a trained model's feature maps (``--init-from``) have clustered before thresholds remove any (0: prune
    #: from the first epoch end, as the paper)
    cluster_epochs: int = 0
    #: non-paper: never prune the block that feeds the final segmentation head (False: prune it, as the paper)
    protect_last_block: bool = False
    #: non-paper: no layer is pruned below this fraction of its planned width (rounded up; the reference channel
    #: and the channels least like it are kept), so that no path of the network narrows to a few channels (None:
    #: no floor, as the paper)
    width_floor: float | None = None
    #: non-paper: no layer is pruned below this many channels (a layer planned narrower keeps its width); with
    #: ``width_floor`` the larger floor holds. oneDNN's AVX2 convolutions compute output channels in blocks of 8, so
    #: a convolution pruned below 8 runs no faster (``benchmarks/cpu_limit.py --parts output-channels``)
    #: (None: no floor, as the paper)
    min_channels: int | None = None
    #: non-paper: no patience after a threshold step that removed nothing from its layer (see
    #: sauronnet.pruning.schedule; False: patience ρ after every step, as the paper)
    skip_empty_patience: bool = False
    #: non-paper: the plateau test reads losses averaged over the last ⌈plateau_iterations / iterations per
    #: epoch⌉ epochs, the paper's statistics (its epochs: 250 iterations) with short epochs (None: each epoch's
    #: own losses, as the paper)
    plateau_iterations: int | None = None
    #: non-paper: undo an epoch end's removals when, in an epoch after them, a class's validation pseudo-Dice lies
    #: more than this below that class's EMA before them; the layers that lost channels then are pruned no further
    #: (None: never, as the paper). The last ``ROLLBACK_CHECK_EPOCHS`` epoch ends then remove nothing, so that every
    #: removal is checked
    rollback_drop: float | None = None
    #: non-paper: a rewind of removals in several layers freezes none of them; each of them then prunes only at
    #: epoch ends where no other layer does, so that a later rewind finds the one layer whose removal broke a class
    #: and freezes that one (False: freeze every layer that lost channels at the undone epoch end)
    rollback_isolate: bool = False
    #: warn when the EMA pseudo-Dice ends this far below its best while channels were removed
    dice_drop_warning: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        if self.score_maps not in SCORE_MAPS:
            raise ValueError(f"score_maps {self.score_maps!r}: choose one of {', '.join(SCORE_MAPS)}")
        if self.val_test not in VAL_TESTS:
            raise ValueError(f"val_test {self.val_test!r}: choose one of {', '.join(VAL_TESTS)}")
        if self.prune_batches < 1 or self.prune_batches > self.iterations_per_epoch:
            raise ValueError(f"prune_batches must be 1..iterations per epoch ({self.iterations_per_epoch}), "
                             f"got {self.prune_batches}")
        if self.width_floor is not None and not 0 < self.width_floor <= 1:
            raise ValueError(f"width_floor must lie in (0, 1], got {self.width_floor}")
        if self.min_channels is not None and self.min_channels < 1:
            raise ValueError(f"min_channels must be at least 1, got {self.min_channels}")
        for name in ("dice_guard", "rollback_drop", "hold_until_learned"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {value}")
        if self.rollback_isolate and self.rollback_drop is None:
            raise ValueError("rollback_isolate (--rollback-isolate) changes what a rewind freezes, so it needs the "
                             "rewind: rollback_drop (--rollback-drop D, e.g. 0.2)")
        if not 0 <= self.tau0 <= self.tau_max <= 1:
            raise ValueError(f"thresholds must satisfy 0 <= tau0 <= tau_max <= 1, got tau0 {self.tau0} and tau_max "
                             f"{self.tau_max}")
        if self.plateau_iterations is not None and self.plateau_iterations < 1:
            raise ValueError(f"plateau_iterations must be at least 1, got {self.plateau_iterations}")
        if self.cluster_epochs < 0:
            raise ValueError(f"cluster_epochs must be 0 or more, got {self.cluster_epochs}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"stop_after must be at least 1 epoch, got {self.stop_after}")

    @property
    def sauron(self) -> SauronSettings:
        names = {f.name for f in fields(SauronSettings)}
        return SauronSettings(**{k: v for k, v in asdict(self).items() if k in names})


#: epoch ends whose removals ``rollback_drop`` can still undo (the most recent ones) ...
ROLLBACK_DEPTH = 2
#: ... for this many epochs after them: a removal that destroys a class shows in the next epoch, and a rewind far
#: back would throw away the training since (a later collapse has another cause)
ROLLBACK_WINDOW = 5
#: epochs a removal needs after it for the rewind to see it (it waits one epoch, rewinds at the next): with
#: ``rollback_drop`` the last this many epoch ends of a run remove nothing, so no removal goes unchecked
ROLLBACK_CHECK_EPOCHS = 2


@dataclass
class Undo:
    """What one epoch end's removals can be undone to (``rollback_drop``): the training state just before them."""

    epoch: int
    #: the layers that lost channels at that epoch end
    layers: list[str]
    #: widths, state_dict and optimizer (on the CPU), checkpoint extras, the trainer's EMA pseudo-Dice
    state: dict = field(repr=False)

    @property
    def baseline(self) -> dict[str, float]:
        """Each class's pseudo-Dice EMA before the removals."""
        return self.state["extras"]["class_ema"]


class SauronTrainer(PruningTrainer):
    name = "SauronTrainer"
    config_class = SauronConfig

    def __init__(self, *args, **kwargs):
        self._maps: dict[str, torch.Tensor] = {}
        self._hooks: list = []
        self._scores: dict[str, list[torch.Tensor]] = {}
        self._references: dict[str, int] = {}
        self._states_now: dict[str, LayerState] = {}
        self._undo: list[Undo] = []
        super().__init__(*args, **kwargs)
        self.layer_states = {name: LayerState() for name in self.network.widths()}
        #: per class, the EMA of the validation pseudo-Dice (read by ``rollback_drop`` and ``hold_until_learned``)
        self.class_ema: dict[str, float] = {}
        #: ``hold_until_learned``: the epoch at whose end every class had first reached it (None: not yet)
        self.hold_released_at: int | None = None

    @property
    def observed_batches(self) -> int:
        return self.config.prune_batches

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
        loss = self.loss(outputs, target, self.world)
        # λ = 0 (no clustering term): the term would add 0 to the loss and its gradient, so it is not computed
        terms = [d for d in (delta_opt(m, self.config.pool) for m in self._maps.values()) if d is not None] \
            if self.config.lam else []
        if terms:  # δ_opt is a mean over samples: weighted by this rank's share of the global batch
            loss = loss + self.config.lam * self.world.share * torch.stack(terms).mean()
        if self.observe_batch:
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
                                                                 self.config.pool, self.config.score_maps).cpu())

    # ---- pruning ---------------------------------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if self.rollback(epoch, metrics):
            return
        for c, v in metrics["pseudo_dice"].items():
            if math.isfinite(v):
                previous = self.class_ema.get(c, v)
                self.class_ema[c] = (1 - EMA_ALPHA) * previous + EMA_ALPHA * v
        super().on_epoch_end(epoch, metrics)

    def apply(self, epoch: int, keep: dict[str, torch.Tensor]) -> dict[str, int]:
        if keep and self.config.rollback_drop is not None:
            cpu = torch.device("cpu")
            state = {"widths": self.network.widths(),
                     "state_dict": {k: v.detach().to(cpu, copy=True) for k, v in self.network.state_dict().items()},
                     "optimizer": _to_device(self.optimizer.state_dict(), cpu),
                     "extras": self.checkpoint_extras(), "ema_dice": self.ema_dice}
            self._undo = [*self._undo, Undo(epoch, sorted(keep), state)][-ROLLBACK_DEPTH:]
        return super().apply(epoch, keep)

    def rollback(self, epoch: int, metrics: dict) -> bool:
        """``rollback_drop``: when a class's pseudo-Dice lies more than ``rollback_drop`` below its EMA before the
        last removals that can still be undone, the epoch end prunes nothing; if it still does in the next epoch,
        network, optimizer, schedules and EMA are rewound to just before those removals and the layers that lost
        channels then are frozen (``rollback_isolate``, several layers: they become suspects instead, see
        :meth:`deferred_suspects`; a suspect whose lone removal leaves the rewind window is cleared). Returns whether
        this epoch end is taken (waiting or rewinding).

        Removing a channel that a class needed shows at once and stays (the lesion of ``make demo`` went from
        pseudo-Dice 0.98 to 0.0 in the epoch after one removal, and did not come back in 40 epochs), while the
        largest dip of a class that was not harmed was 0.064 on the demo set; on toy64 the thin class fell from 0.92
        to 0.31 after a removal and was back at 0.80 the next epoch, hence the second epoch (README: 'Two ways to a
        small model'). A rewind after another rewind goes one pruning further back (up to ``ROLLBACK_DEPTH``, within
        ``ROLLBACK_WINDOW`` epochs); the states to rewind to live in memory, so a run continued from a checkpoint
        cannot undo earlier removals.
        """
        drop = self.config.rollback_drop
        for u in self._undo:
            if epoch - u.epoch > ROLLBACK_WINDOW and len(u.layers) == 1:  # a suspect's lone removal passed
                (name,) = u.layers
                self.layer_states[name] = replace(self.layer_states[name], suspect=False)
        self._undo = [u for u in self._undo if epoch - u.epoch <= ROLLBACK_WINDOW]
        if drop is None or not self._undo:
            return False
        undo = self._undo[-1]
        collapsed = {c: v for c, v in metrics["pseudo_dice"].items()
                     if math.isfinite(v) and c in undo.baseline and v < undo.baseline[c] - drop}
        if not collapsed:
            return False
        self._scores, self._references, self._states_now = {}, {}, dict(self.layer_states)
        if not (self.history and self.history[-1].get("rollback_wait") == undo.epoch):
            metrics["rollback_wait"] = undo.epoch
            metrics["pruning"] = self.pruning_report(self.network.widths(), {})
            logger.info("epoch %d: pseudo-Dice of class %s fell more than %.2f below its level before the removals "
                        "of epoch %d: no pruning this epoch; they are undone if it stays there", epoch,
                        ", ".join(collapsed), drop, undo.epoch)
            return True
        self._undo.pop()
        before = self.network.widths()
        self.load_weights(undo.state)  # the optimizer moves its state onto its parameters' device
        # flags set by rewinds after these removals
        frozen = {name for name, st in self.layer_states.items() if st.frozen}
        suspects = {name for name, st in self.layer_states.items() if st.suspect}
        self.load_checkpoint_extras(undo.state["extras"])
        self.ema_dice = undo.state["ema_dice"]
        if self.config.rollback_isolate and len(undo.layers) > 1:
            suspects |= set(undo.layers)
            culprits = []
        else:
            culprits = undo.layers
        for name in self.layer_states:
            self.layer_states[name] = replace(self.layer_states[name], frozen=name in frozen | set(culprits),
                                              suspect=name in suspects - frozen - set(culprits))
        self._states_now = dict(self.layer_states)  # with the flags
        removed = {name: before[name] - w for name, w in self.network.widths().items()}  # negative: channels back
        metrics["rollback"] = {"to_epoch": undo.epoch, "classes": collapsed, "frozen": culprits,
                               **({"suspects": undo.layers} if not culprits else {})}
        metrics["pruning"] = self.pruning_report(before, removed)
        logger.warning("epoch %d: pseudo-Dice of class %s stayed more than %.2f below its level before the removals "
                       "of epoch %d; they are undone (%d channels back) and %s", epoch,
                       ", ".join(f"{c} ({v:.3f} < {undo.baseline[c]:.3f})" for c, v in collapsed.items()), drop,
                       undo.epoch, -sum(removed.values()),
                       f"layers {', '.join(culprits)} are pruned no further" if culprits else
                       f"layers {', '.join(undo.layers)} prune only alone from now on, until one is found out")
        return True

    def select(self, epoch: int, metrics: dict) -> dict[str, torch.Tensor]:
        """Advances every layer's threshold schedule and keeps, per layer, the channels whose δ_prune reaches
        its threshold (and the reference channel)."""
        s = self.config.sauron
        train = [h["train_loss"] for h in self.history] + [metrics["train_loss"]]
        val = [h["val_loss"] for h in self.history] + [metrics["val_loss"]]
        window = plateau_window(self.config.plateau_iterations, self.config.iterations_per_epoch)
        losses_ok = losses_converged(train, val, s.rho, self.config.val_test, window)
        waiting = self.advance_hold(epoch)
        clustering = epoch < self.config.cluster_epochs
        unchecked = self.config.rollback_drop is not None and epoch >= self.config.epochs - ROLLBACK_CHECK_EPOCHS
        paused = bool(waiting) or clustering or unchecked or self.guard_pauses(metrics)
        metrics["sauron_paused"] = paused
        if unchecked:
            logger.info("epoch %d: no removals in the last %d epochs, where the rewind (--rollback-drop) could not "
                        "check them", epoch, ROLLBACK_CHECK_EPOCHS)
        elif clustering:
            logger.info("epoch %d: the clustering term acts alone until epoch %d (--cluster-epochs)", epoch,
                        self.config.cluster_epochs)
        elif waiting:
            metrics["sauron_waits_for"] = waiting
            logger.info("epoch %d: Sauron holds until every class is learned: pseudo-Dice (EMA) of class %s below "
                        "%.2f", epoch, ", ".join(f"{self.class_label(c)}: {v:.3f}" for c, v in waiting.items()),
                        self.config.hold_until_learned)
        elif paused:
            logger.info("epoch %d: Sauron paused: pseudo-Dice (EMA) %.4f is more than %.3f below its best", epoch,
                        metrics["ema_pseudo_dice"], self.config.dice_guard)
        protected = {self.head_input_block()} if self.config.protect_last_block else set()
        protected |= {name for name, st in self.layer_states.items() if st.frozen}
        scores = self.global_scores()
        floors = self.width_floors()
        keep, states = {}, {}
        widths = self.network.widths()
        for name, width in widths.items():
            states[name] = self.layer_states[name] if paused else advance(self.layer_states[name], losses_ok, s)
            if name in scores and not paused and name not in protected:
                score = scores[name]
                prune = (score < threshold(states[name], s)) & (torch.arange(score.numel()) != self._references[name])
                prune = _at_most(prune, score, width - floors.get(name, 1))
                if prune.any():
                    keep[name] = torch.nonzero(~prune).flatten()
        deferred = self.deferred_suspects(keep)
        for name in deferred:  # as if this epoch end had not come for them
            del keep[name]
            states[name] = self.layer_states[name]
        for name, width in widths.items():
            self._states_now[name] = states[name]
            if not paused and name not in deferred:
                removed = width - len(keep[name]) if name in keep else 0
                self.layer_states[name] = record_pruning(states[name], width, removed,
                                                         s.rho if self.config.skip_empty_patience else None)
        self._scores, self._references = {}, {}
        return keep

    def deferred_suspects(self, keep: dict[str, torch.Tensor]) -> list[str]:
        """``rollback_isolate``: the suspect layers that would lose channels at this epoch end but must wait: all of
        them while another layer loses channels, all but the first (in forward order) otherwise — a suspect prunes
        alone, so a collapse after its removal names it."""
        suspects = [name for name in keep if self.layer_states[name].suspect]
        return suspects if len(suspects) < len(keep) else suspects[1:]

    def global_scores(self) -> dict[str, torch.Tensor]:
        """Per layer, δ_prune averaged over the observed batches and over the global batch (all ranks)."""
        names = sorted(self._scores)
        if not names:
            return {}
        local = [torch.stack(self._scores[n]).mean(0) for n in names]
        merged = self.world.sample_mean(torch.cat(local).to(self.device)).cpu()
        return dict(zip(names, merged.split([t.numel() for t in local])))

    def width_floors(self) -> dict[str, int]:
        """``width_floor`` and ``min_channels``: per layer, the fewest channels it may keep (none without a floor)."""
        fraction, least = self.config.width_floor, self.config.min_channels
        if fraction is None and least is None:
            return {}
        return {name: max(math.ceil(fraction * w) if fraction is not None else 1, min(least or 1, w))
                for name, w in default_widths(self.cfg.network).items()}

    def layer_report(self, name: str) -> dict:
        state = self._states_now[name]
        return {"tau": threshold(state, self.config.sauron), "patience": state.patience,
                **({"frozen": True} if state.frozen else {}), **({"suspect": True} if state.suspect else {})}

    def head_input_block(self) -> str:
        """The prunable layer that feeds the final segmentation head (the last one in forward order)."""
        return list(self.network.widths())[-1]

    def advance_hold(self, epoch: int) -> dict[str, float]:
        """``hold_until_learned``: the classes whose pseudo-Dice EMA has not yet reached it (with their EMA), until
        the first epoch at which none is left, which it records (``hold_released_at``); from then on, and without
        the option, none. Until validation has shown a class, every class holds; after that, a class never seen in
        validation does not (nothing tells whether it is learned)."""
        level = self.config.hold_until_learned
        if level is None or self.hold_released_at is not None:
            return {}
        if not self.class_ema:  # no class seen in validation yet
            return {str(v): math.nan for v in self.plans.labels.values() if v != 0}
        waiting = {c: v for c, v in self.class_ema.items() if v < level}
        if not waiting:
            self.hold_released_at = epoch
            logger.info("epoch %d: every class's pseudo-Dice (EMA) has reached %.2f: Sauron's thresholds start",
                        epoch, level)
        return waiting

    def guard_pauses(self, metrics: dict) -> bool:
        """``dice_guard``: no threshold step and no removal in an epoch whose EMA pseudo-Dice lies more than
        ``dice_guard`` below its best so far, so pruning never outruns what the network can re-learn."""
        margin = self.config.dice_guard
        ema = [e for e in [h["ema_pseudo_dice"] for h in self.history] + [metrics["ema_pseudo_dice"]]
               if e is not None]
        return margin is not None and bool(ema) and ema[-1] < max(ema) - margin

    def training_done(self) -> bool:
        """``stop_after``: every layer at τ_max (or frozen) and nothing removed for the last ``stop_after``
        epochs, none of which was held by ``dice_guard`` or waiting for a rewind (their removals are 0 because
        pruning is on hold, not over: the network is still to recover)."""
        n = self.config.stop_after
        if n is None or len(self.history) < n:
            return False
        recent = self.history[-n:]
        if any(h.get("sauron_paused") or "rollback_wait" in h for h in recent):
            return False
        return all((r["tau"] >= self.config.tau_max - 1e-12 or r.get("frozen")) and r["removed"] == 0
                   for h in recent for r in h.get("pruning", {}).values())

    # ---- summary ---------------------------------------------------------------------------------------------
    def summary_extras(self) -> dict:
        return {"final_thresholds": {name: threshold(st, self.config.sauron)
                                     for name, st in self.layer_states.items()},
                **({"hold_released_at": self.hold_released_at}
                   if self.config.hold_until_learned is not None else {}),
                "rollbacks": [{"epoch": h["epoch"], **h["rollback"]} for h in self.history if "rollback" in h]}

    def warnings(self) -> list[str]:
        """A pruned network that lost what it had learned, or learned a class only once pruned, must never pass
        silently; nor a run that never pruned because a class was never learned (``hold_until_learned``)."""
        messages = super().warnings()
        if self.config.hold_until_learned is not None and self.hold_released_at is None:
            below = ", ".join(f"{self.class_label(c)}: pseudo-Dice EMA {v:.3f}" for c, v in self.class_ema.items()
                              if v < self.config.hold_until_learned) or "every class (none seen in validation)"
            messages.append(f"Sauron never pruned: --hold-until-learned {self.config.hold_until_learned} waited for "
                            f"class {below} until the last epoch. Train longer, check the class occurs in the training "
                            "cases, or lower the level to what this class can reach.")
        return messages + self._dice_drop_warnings()

    def _dice_drop_warnings(self) -> list[str]:
        ema = [(h["epoch"], h["ema_pseudo_dice"]) for h in self.history if h.get("ema_pseudo_dice") is not None]
        removed = sum(r["removed"] for h in self.history for r in h.get("pruning", {}).values())
        if not ema or not removed:
            return []
        best_epoch, best = max(ema, key=lambda t: t[1])
        last = ema[-1][1]
        if best - last <= self.config.dice_drop_warning:
            return []
        last_block = self.head_input_block()
        planned = default_widths(self.cfg.network)[last_block]
        return [f"validation pseudo-Dice fell from {best:.3f} (epoch {best_epoch}) to {last:.3f} while Sauron "
                f"removed {removed} channels, so the pruned model segments worse than it did. Seen causes: the "
                "thresholds rose before the network had learned (short, noisy epochs pass the plateau test early), "
                f"or the block feeding the segmentation head ({last_block}: {self.network.widths()[last_block]} of "
                f"{planned} channels left) lost channels a class needed. Train longer epochs (--iters), prune a "
                "trained model with --init-from, or pause pruning while Dice is down with --dice-guard (README: "
                "'Two ways to a small model')."]

    # ---- checkpoints -----------------------------------------------------------------------------------------
    def checkpoint_extras(self) -> dict:
        return {"layer_states": {k: asdict(v) for k, v in self.layer_states.items()},
                "class_ema": dict(self.class_ema), "hold_released_at": self.hold_released_at}

    def load_checkpoint_extras(self, extras: dict) -> None:
        self.layer_states = {k: LayerState(**v) for k, v in extras["layer_states"].items()}
        self.class_ema = dict(extras.get("class_ema", {}))  # checkpoints before --rollback-drop have none
        self.hold_released_at = extras.get("hold_released_at")  # checkpoints before --hold-until-learned have none


def _at_most(prune: torch.Tensor, score: torch.Tensor, n: int) -> torch.Tensor:
    """``prune`` narrowed to its ``n`` lowest-scoring channels (the nearest duplicates go first)."""
    n = max(n, 0)
    if int(prune.sum()) <= n:
        return prune
    candidates = torch.nonzero(prune).flatten()
    chosen = candidates[torch.argsort(score[candidates], stable=True)[:n]]
    narrowed = torch.zeros_like(prune)
    narrowed[chosen] = True
    return narrowed


def _to_device(state, device: torch.device):
    """An optimizer state dict (nested containers of tensors) with every tensor on ``device``."""
    if isinstance(state, torch.Tensor):
        return state.to(device, copy=True)
    if isinstance(state, dict):
        return {k: _to_device(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_device(v, device) for v in state)
    return state
