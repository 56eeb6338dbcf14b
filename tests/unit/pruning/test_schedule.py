from dataclasses import replace

import pytest

from sauronnet.pruning.schedule import (LayerState, SauronSettings, advance, layer_stopped_pruning,
                                        losses_converged, plateau_window, record_pruning, threshold,
                                        threshold_grid, windowed_means)

S = SauronSettings()


def test_grid():
    g = threshold_grid(S)
    assert len(g) == 16 and g[0] == pytest.approx(0.001) and g[-1] == pytest.approx(0.3)
    assert threshold(LayerState(step=15), S) == pytest.approx(0.3)


def test_no_convergence_before_rho_plus_one_losses():
    assert not losses_converged([1.0, 1.1, 0.9, 1.0, 1.05], [1, 2, 3, 4, 5], rho=5)
    assert losses_converged([1.0, 1.1, 0.9, 1.0, 1.05, 1.0], [1, 2, 3, 4, 5, 6], rho=5)


@pytest.mark.parametrize("last, ok", [(1.0, True), (0.85, False), (1.2, False)])
def test_plateau_condition(last, ok):
    train = [5.0, 1.0, 1.1, 0.9, 1.0, 1.05, last]
    assert losses_converged(train, [0.5] * 6 + [0.6], rho=5) is ok


def test_new_validation_minimum_blocks_convergence():
    train = [1.0, 1.1, 0.9, 1.0, 1.05, 1.0]
    assert not losses_converged(train, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], rho=5)
    assert losses_converged(train, [1.0, 0.9, 0.8, 0.7, 0.5, 0.6], rho=5)


def test_windowed_means():
    assert windowed_means([1.0, 2.0, 3.0, 4.0], 1) == [1.0, 2.0, 3.0, 4.0]
    assert windowed_means([1.0, 2.0, 3.0, 4.0], 2) == pytest.approx([1.5, 2.5, 3.5])
    assert windowed_means([1.0, 2.0], 3) == []
    assert plateau_window(None, 5) == 1 and plateau_window(250, 250) == 1 and plateau_window(250, 5) == 50
    assert plateau_window(250, 12) == 21  # ceil(250 / 12)


def test_window_sees_a_trend_that_epoch_noise_hides():
    # a loss falling by 0.01 per epoch under +-0.1 alternating noise: each epoch's own loss passes the plateau
    # test (the last value lies inside the range of the five before it), the 4-epoch means fall steadily
    train = [1.0 - 0.01 * i + (0.1 if i % 2 else -0.1) for i in range(20)]
    val = [1.0] * 20  # no new validation minimum
    assert losses_converged(train, val, rho=5)
    assert not losses_converged(train, val, rho=5, window=4)
    # and a flat loss under the same noise passes the averaged test too
    flat = [1.0 + (0.1 if i % 2 else -0.1) for i in range(20)]
    assert losses_converged(flat, val, rho=5, window=4)
    # the test needs rho + 1 averaged losses: window + rho epochs
    assert not losses_converged(flat[:8], val[:8], rho=5, window=4)
    assert losses_converged(flat[:9], val[:9], rho=5, window=4)


def test_two_percent_rule():
    assert layer_stopped_pruning(LayerState(last_removed=1, width_before_last=64), 0.02)  # ceil(1.28) = 2
    assert not layer_stopped_pruning(LayerState(last_removed=2, width_before_last=64), 0.02)
    assert layer_stopped_pruning(LayerState(), 0.02) is False  # nothing pruned yet: ceil(0) = 0


def test_step_then_patience_counts_down():
    s = SauronSettings(rho=2)
    state = record_pruning(LayerState(), 100, 0)
    state = advance(state, True, s)
    assert (state.step, state.patience) == (1, 2)
    state = advance(record_pruning(state, 100, 0), True, s)
    assert (state.step, state.patience) == (1, 1)
    state = advance(state, True, s)
    assert (state.step, state.patience) == (1, 0)
    state = advance(state, True, s)
    assert (state.step, state.patience) == (2, 2)
    # a layer that is still losing channels (>= 2 %) does not step
    busy = record_pruning(LayerState(step=2), 100, 5)
    assert advance(busy, True, s).step == 2
    # losses not converged: no step
    assert advance(record_pruning(LayerState(), 100, 0), False, s).step == 0


def test_threshold_never_passes_the_last_step():
    s = SauronSettings(kappa=2)
    state = record_pruning(LayerState(step=2), 10, 0)
    assert advance(state, True, s).step == 2


def test_scripted_run():
    # a flat training loss (1.0, 1.1, 0.9, ...) whose validation minimum lies in epoch 0: the first step comes
    # once rho + 1 = 6 losses exist (epoch 5), the next after rho patience epochs (epoch 11), then epoch 17
    s = SauronSettings(rho=5)
    state, steps, train, val = LayerState(), [], [], []
    for e in range(18):
        train.append([1.0, 1.1, 0.9][e % 3])
        val.append(0.5 if e == 0 else 1.0)
        state = record_pruning(advance(state, losses_converged(train, val, s.rho), s), 32, 0)
        steps.append(state.step)
    assert steps == [0] * 5 + [1] * 6 + [2] * 6 + [3]


def test_reference_val_test_ignores_validation_minima():
    # the reference code's validation test was always false: only the plateau counts
    train = [1.0, 1.1, 0.9, 1.0, 1.05, 1.0]
    improving = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
    assert not losses_converged(train, improving, rho=5, val_test="intended")
    assert losses_converged(train, improving, rho=5, val_test="reference")
    assert not losses_converged(train[:-1] + [0.5], improving, rho=5, val_test="reference")  # no plateau
    with pytest.raises(ValueError, match="intended"):
        losses_converged(train, improving, rho=5, val_test="always")


def test_skip_empty_patience_climbs_one_step_per_epoch_until_a_step_removes_channels():
    # the scripted run's flat loss, from epoch 5 on converged every epoch: with the option a step that removes
    # nothing leaves no patience, so the threshold climbs each epoch; the step that removes channels (epoch 8)
    # gets the paper's patience and the 2 % rule holds the next step while the layer is still losing channels
    s = SauronSettings(rho=5)
    removed_at = {8: 3}
    paper, fast = LayerState(), LayerState()
    fast_steps, paper_steps = [], []
    for e in range(16):
        fast = advance(fast, e >= 5, s)
        fast = record_pruning(fast, 32, removed_at.get(e, 0), s.rho)
        paper = record_pruning(advance(paper, e >= 5, s), 32, 0)
        fast_steps.append(fast.step)
        paper_steps.append(paper.step)
    assert fast_steps == [0] * 5 + [1, 2, 3, 4] + [4] * 5 + [5, 6]
    assert paper_steps == [0] * 5 + [1] * 6 + [2] * 5
    # without the option the same removals change nothing about the patience
    assert record_pruning(LayerState(step=1, patience=5), 32, 0).patience == 5
    assert record_pruning(LayerState(step=1, patience=5), 32, 0, 5).patience == 0
    assert record_pruning(LayerState(step=1, patience=5), 32, 2, 5).patience == 5
    assert record_pruning(LayerState(step=1, patience=3), 32, 0, 5).patience == 3  # not a step of this epoch


def test_a_frozen_layer_keeps_its_threshold_and_patience():
    s = SauronSettings()
    ready = record_pruning(LayerState(), 100, 0)  # would step now
    assert advance(ready, True, s).step == 1
    for state in (replace(ready, frozen=True), LayerState(step=3, patience=2, frozen=True)):
        assert advance(state, True, s) == state
