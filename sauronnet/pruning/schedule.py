"""Sauron's per-layer threshold schedule, as pure functions of loss and width histories (DESIGN.md §5).

Each prunable layer has a threshold τ on the grid ``linspace(τ0, τ_max, κ + 1)``, starting at its first value,
and a patience counter. At every epoch end: if patience > 0 it is decremented; otherwise, if training has
*converged*, τ steps up once and patience becomes ρ. Converged means all of:

1. at least ρ + 1 training losses are recorded;
2. the last training loss lies within [min, max] of the ρ before it (a plateau);
3. the last validation loss is not a new minimum (the reference code meant this but wrote an always-false test,
   so the paper's numbers were produced without it: ``val_test="reference"`` reproduces that, ``"intended"``
   applies the test the code meant);
4. the previous pruning removed fewer than ⌈μ · previous width⌉ channels of this layer.

Non-paper option ``skip_empty_patience``: a step after which the layer loses no channel is followed by no
patience, so a threshold climbs through the part of the grid that removes nothing at one step per converged
epoch instead of one per ρ + 1; patience still follows every step that removed channels. It is meant for a
trained model (``--init-from``), whose loss is flat from the start and whose channels all lie far above the
first grid values, where the paper's schedule spends ~50 epochs on steps that remove nothing.

Non-paper option ``window`` of :func:`losses_converged` (``--plateau-iterations``): conditions 1–3 read each
epoch's losses averaged with those of the ``window − 1`` epochs before it. The paper's epochs are 250 iterations,
so each loss it tests is a mean over 250 batches; an epoch of 5 iterations gives a loss ~7× noisier, whose
noise passes the plateau test while the network is still learning (a minority class learned at epoch 70 while
the thresholds had climbed since epoch 15). Averaging over ⌈250 / iterations⌉ epochs gives the test the paper's
statistics again; with 250-iteration epochs the window is 1, the paper's test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SauronSettings:
    """The paper's constants."""

    lam: float = 0.5  # λ, weight of the clustering term
    tau0: float = 0.001  # first threshold
    tau_max: float = 0.3  # last threshold
    kappa: int = 15  # number of threshold steps
    rho: int = 5  # patience after a step / plateau length
    mu: float = 0.02  # "still pruning" fraction
    pool: int = 2  # pooling kernel of the distances


@dataclass(frozen=True)
class LayerState:
    """Schedule state of one layer: position on the threshold grid, patience, last pruning's outcome."""

    step: int = 0
    patience: int = 0
    last_removed: int = 0
    width_before_last: int = 0
    #: non-paper (``--rollback-drop``): the layer's last removal was undone because a class collapsed after it;
    #: its threshold stays where it is and it loses no more channels
    frozen: bool = False
    #: non-paper (``--rollback-isolate``): the layer lost channels at an epoch end that was undone together with
    #: other layers' removals; it loses channels again only at epoch ends where no other layer does, so that a
    #: collapse after its removal names it
    suspect: bool = False


def threshold_grid(s: SauronSettings) -> np.ndarray:
    return np.linspace(s.tau0, s.tau_max, s.kappa + 1)


def threshold(state: LayerState, s: SauronSettings) -> float:
    return float(threshold_grid(s)[state.step])


#: Condition 3 as the reference code ran it (never blocks) or as it meant it.
VAL_TESTS = ("reference", "intended")


def windowed_means(losses: Sequence[float], window: int) -> list[float]:
    """Each loss averaged with the ``window − 1`` before it; defined from the ``window``-th loss on."""
    if window <= 1:
        return list(losses)
    total = np.cumsum([0.0, *losses])
    return [float(total[i] - total[i - window]) / window for i in range(window, len(losses) + 1)]


def plateau_window(plateau_iterations: int | None, iterations_per_epoch: int) -> int:
    """Epochs whose losses the plateau test averages: ⌈plateau_iterations / iterations per epoch⌉ (None: 1)."""
    return 1 if plateau_iterations is None else max(1, math.ceil(plateau_iterations / iterations_per_epoch))


def losses_converged(train_losses: Sequence[float], val_losses: Sequence[float], rho: int,
                     val_test: str = "intended", window: int = 1) -> bool:
    """Conditions 1–3 (shared by every layer); ``val_test`` is one of :data:`VAL_TESTS`; ``window`` > 1 tests
    the losses averaged over that many epochs (see the module docstring)."""
    if val_test not in VAL_TESTS:
        raise ValueError(f"unknown validation test {val_test!r}; choose one of {', '.join(VAL_TESTS)}")
    train_losses, val_losses = windowed_means(train_losses, window), windowed_means(val_losses, window)
    if len(train_losses) < rho + 1 or not val_losses:
        return False
    last, previous = train_losses[-1], train_losses[-(rho + 1):-1]
    plateau = min(previous) <= last <= max(previous)
    if val_test == "reference":
        return plateau
    new_val_minimum = len(val_losses) == 1 or val_losses[-1] < min(val_losses[:-1])
    return plateau and not new_val_minimum


def layer_stopped_pruning(state: LayerState, mu: float) -> bool:
    """Condition 4: the previous pruning removed fewer than ⌈μ · width⌉ channels of the layer."""
    return state.last_removed < math.ceil(mu * state.width_before_last)


def advance(state: LayerState, losses_ok: bool, s: SauronSettings) -> LayerState:
    """One epoch end of the schedule for one layer (before pruning); a frozen layer stays as it is."""
    if state.frozen:
        return state
    if state.patience > 0:
        return replace(state, patience=state.patience - 1)
    if losses_ok and layer_stopped_pruning(state, s.mu) and state.step < s.kappa:
        return replace(state, step=state.step + 1, patience=s.rho)
    return state


def record_pruning(state: LayerState, width_before: int, removed: int, rho: int | None = None) -> LayerState:
    """Records the epoch's removals; with ``rho`` (``skip_empty_patience``) a step taken this epoch (patience
    just set to ρ) that removed nothing leaves no patience."""
    if rho is not None and removed == 0 and state.patience == rho:
        state = replace(state, patience=0)
    return replace(state, last_removed=removed, width_before_last=width_before)
