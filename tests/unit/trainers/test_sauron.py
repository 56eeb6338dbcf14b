import json
import math
from unittest import mock

import torch

from sauronnet.inference.torch_network import load_fold_network
from sauronnet.networks.unet import default_widths
from sauronnet.paths import Paths
from sauronnet.plans import Plans
from sauronnet.pruning.schedule import LayerState
from sauronnet.checkpoint import load_checkpoint
from trainers.base import with_overrides
from trainers.pruning import LAST_REMOVALS_DROP
from trainers.sauron import ROLLBACK_CHECK_EPOCHS, ROLLBACK_WINDOW, SauronConfig, SauronTrainer

# a high first threshold prunes at the first epoch end; a short schedule keeps it moving
FAST = SauronConfig(epochs=3, iterations_per_epoch=2, val_iterations=1, num_workers=0, seed=5, tau0=0.3,
                    tau_max=0.6, kappa=2, rho=1)
# the rewind, for tests driving epoch ends by hand (far from the last epochs, which remove nothing with it)
REWIND = with_overrides(FAST, rollback_drop=0.2, epochs=50)


def make(paths, config=FAST):
    plans = Plans.load(paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
    return SauronTrainer(plans, "3d_fullres", "0", paths, config, "cpu")


def test_config_defaults_are_the_papers():
    s = SauronConfig().sauron
    assert (s.lam, s.tau0, s.tau_max, s.kappa, s.rho, s.mu, s.pool) == (0.5, 0.001, 0.3, 15, 5, 0.02, 2)


def test_widths_shrink_and_outputs_are_written(results_paths):
    t = make(results_paths)
    summary = t.fit(progress=False)
    planned = default_widths(t.cfg.network)
    widths = t.network.widths()
    assert sum(widths.values()) < sum(planned.values())
    assert all(1 <= widths[k] <= planned[k] for k in planned)
    lines = [json.loads(x) for x in (t.output_dir / "pruning.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and set(lines[0]["layers"]) == set(planned)
    assert lines[-1]["layers"]["enc0.0"]["width"] == widths["enc0.0"]
    p = summary["pruning"]
    assert p["flops_after"] < p["flops_before"] and p["parameters_after"] < p["parameters_before"]
    assert json.loads((t.output_dir / "pruning_summary.json").read_text())["widths"] == widths
    # the pruned checkpoint rebuilds its own network and reproduces its outputs exactly
    net, _, _ = load_fold_network(t.output_dir / "checkpoint_final.pth", torch.device("cpu"))
    assert net.widths() == widths
    x = torch.randn(1, 1, *t.cfg.patch_size)
    t.network.eval()
    t.network.deep_supervision = False
    with torch.no_grad():
        assert torch.equal(net(x), t.network(x))


def test_resume_mid_run_reproduces_widths_and_weights(results_paths, tmp_path):
    straight = make(results_paths)
    straight.fit(progress=False)
    other = Paths(results_paths.raw, results_paths.preprocessed, tmp_path / "other")
    first = make(other)
    first.output_dir.mkdir(parents=True, exist_ok=True)
    streams = first.make_streams()
    first._run_epoch(*streams, progress=False)  # one epoch, then "killed"
    for s in streams:
        s.close()
    assert load_checkpoint(first.output_dir / "checkpoint_latest.pth")["widths"] == first.network.widths()
    resumed = make(other)
    resumed.fit(resume=True, progress=False)
    assert resumed.network.widths() == straight.network.widths()
    assert resumed.layer_states == straight.layer_states
    for a, b in zip(resumed.network.parameters(), straight.network.parameters()):
        assert torch.equal(a, b)


def test_loss_adds_the_clustering_term(results_paths):
    t = make(results_paths, with_overrides(FAST, lam=0.0))
    t2 = make(results_paths, with_overrides(FAST, lam=1.0))
    t2.network.load_state_dict(t.network.state_dict())
    batch = next(t.make_streams()[1].batches(0, 1))
    data, target = torch.from_numpy(batch["data"]), torch.from_numpy(batch["seg"])
    losses = []
    for tr in (t, t2):
        tr.network.train()
        losses.append(float(tr.compute_loss(tr.network(data), target).detach()))
    assert losses[1] > losses[0]
    assert t2._maps == {}  # feature maps are released after each loss
    # λ = 0: exactly the segmentation loss, and δ_opt is not computed at all
    with mock.patch("trainers.sauron.delta_opt", side_effect=AssertionError("computed with λ = 0")):
        assert float(t.compute_loss(t.network(data), target).detach()) == losses[0]
    assert losses[0] == float(t.loss(t.network(data), target, t.world).detach())


def test_adam_variant_prunes_too(results_paths):
    class AdamSauron(SauronTrainer):
        def configure_optimizers(self):
            return torch.optim.Adam(self.network.parameters(), lr=1e-3)

    plans = Plans.load(results_paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
    t = AdamSauron(plans, "3d_fullres", "0", results_paths, with_overrides(FAST, epochs=2), "cpu")
    t.fit(progress=False)
    assert sum(t.network.widths().values()) < sum(default_widths(t.cfg.network).values())
    stepped = [p for p in t.network.parameters() if p.grad is not None]  # (the weight-0 lowest head gets none)
    assert len(stepped) >= 0.9 * len(list(t.network.parameters()))
    for p in stepped:
        state = t.optimizer.state[p]  # every stepped parameter keeps Adam's state, cut to its pruned shape
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape


def _history(rows):
    """Per-epoch history entries with a Sauron report: rows of (ema, {layer: (tau, removed)})."""
    return [{"epoch": e, "ema_pseudo_dice": ema,
             "pruning": {k: {"tau": tau, "removed": removed, "width": 8, "patience": 0}
                        for k, (tau, removed) in layers.items()}}
            for e, (ema, layers) in enumerate(rows)]


def test_stop_after_needs_every_layer_at_tau_max_without_removals(results_paths):
    t = make(results_paths, with_overrides(FAST, stop_after=2))
    done = {"a": (0.6, 0), "b": (0.6, 0)}
    t.history = _history([(0.5, done), (0.5, done)])
    assert t.training_done()
    t.history = _history([(0.5, done), (0.5, {"a": (0.6, 0), "b": (0.6, 1)})])
    assert not t.training_done()  # a layer still lost a channel
    t.history = _history([(0.5, done), (0.5, {"a": (0.6, 0), "b": (0.45, 0)})])
    assert not t.training_done()  # a threshold is still climbing
    t.history = _history([(0.5, done)])
    assert not t.training_done()  # not yet stop_after epochs
    t.history = _history([(0.5, done), (0.5, {"a": (0.6, 0), "b": (0.45, 0)})])
    t.history[-1]["pruning"]["b"]["frozen"] = True
    assert t.training_done()  # a layer frozen by a rewind climbs no further
    for hold in ({"sauron_paused": True}, {"rollback_wait": 0}):
        t.history = _history([(0.5, done), (0.5, done)])
        t.history[-1].update(hold)
        assert not t.training_done()  # nothing removed because pruning is on hold, not because it is over
    t2 = make(results_paths)
    t2.history = _history([(0.5, done)] * 5)
    assert not t2.training_done()  # the paper's way: every epoch is trained


def test_fit_stops_early_once_pruning_is_over(results_paths):
    # tau0 = tau_max = 0: every threshold starts at its last value and no score is ever below it
    t = make(results_paths, with_overrides(FAST, epochs=10, tau0=0.0, tau_max=0.0, kappa=1, stop_after=2))
    summary = t.fit(progress=False)
    assert t.epoch == 2 and summary["pruning"]["epochs_trained"] == 2
    assert (t.output_dir / "checkpoint_final.pth").is_file()


def test_a_collapsing_dice_while_pruning_is_reported(results_paths):
    t = make(results_paths)
    layers = {"a": (0.1, 0)}
    t.history = _history([(0.2, layers), (0.9, {"a": (0.1, 5)}), (0.85, layers), (0.3, layers)])
    (warning,) = t.warnings()
    assert "0.900" in warning and "0.300" in warning and "--init-from" in warning
    t.history = _history([(0.2, layers), (0.9, {"a": (0.1, 5)}), (0.88, layers)])
    assert t.warnings() == []  # within dice_drop_warning
    t.history = _history([(0.2, layers), (0.9, layers), (0.3, layers)])
    assert t.warnings() == []  # nothing pruned: not Sauron's doing


def test_invalid_sauron_options_are_refused():
    import pytest
    for bad in ({"score_maps": "l1"}, {"val_test": "never"}, {"prune_batches": 3}, {"stop_after": 0},
                {"dice_guard": 1.5}, {"rollback_drop": 0.0}, {"plateau_iterations": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            with_overrides(FAST, **bad)


def _epoch_end_with_zero_scores(t, ema_history, ema_now, score=0.0, dice=None):
    """One epoch end whose δ_prune is ``score`` for every channel (0: all but the reference would go) after a
    history of EMA pseudo-Dice values."""
    t.history = [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "ema_pseudo_dice": v}
                 for e, v in enumerate(ema_history)]
    t._scores = {name: [torch.full((w,), score)] for name, w in t.network.widths().items()}
    t._references = {name: 0 for name in t._scores}
    metrics = {"epoch": len(ema_history), "train_loss": 1.0, "val_loss": 1.0, "ema_pseudo_dice": ema_now,
               "pseudo_dice": dice or {}}
    t.on_epoch_end(len(ema_history), metrics)
    return metrics


def test_dice_guard_pauses_pruning_while_dice_is_down(results_paths):
    planned = sum(default_widths(make(results_paths).cfg.network).values())
    guarded = make(results_paths, with_overrides(FAST, dice_guard=0.1))
    states = dict(guarded.layer_states)
    metrics = _epoch_end_with_zero_scores(guarded, [0.5, 0.9, 0.85], 0.75)  # 0.15 below the best
    assert metrics["sauron_paused"] and sum(guarded.network.widths().values()) == planned
    assert guarded.layer_states == states  # no threshold step either
    metrics = _epoch_end_with_zero_scores(guarded, [0.5, 0.9, 0.85], 0.85)  # within the margin: prunes
    assert not metrics["sauron_paused"] and sum(guarded.network.widths().values()) == len(states)
    paper = make(results_paths)  # no guard, as the paper
    assert not _epoch_end_with_zero_scores(paper, [0.5, 0.9, 0.85], 0.2)["sauron_paused"]
    assert sum(paper.network.widths().values()) == len(states)


def test_skip_empty_patience_drops_the_patience_of_steps_that_removed_nothing(results_paths):
    for skip, patience in ((False, FAST.rho), (True, 0)):
        t = make(results_paths, with_overrides(FAST, skip_empty_patience=skip))
        widths = dict(t.network.widths())
        t.layer_states = {k: LayerState(width_before_last=w) for k, w in widths.items()}  # a recorded epoch
        _epoch_end_with_zero_scores(t, [0.5, 0.5, 0.5], 0.5, score=1.0)  # flat losses: every layer steps
        assert t.network.widths() == widths
        assert all((s.step, s.patience) == (1, patience) for s in t.layer_states.values())


def test_plateau_iterations_average_the_losses_the_schedule_tests(results_paths):
    # 2 iterations per epoch and --plateau-iterations 4: the test reads 2-epoch means. Losses 1.0, 0.8, 0.8:
    # the last epoch equals the one before (a plateau for the paper's test, rho 1), the 2-epoch means fall
    steps = {}
    for plateau in (None, 4):
        t = make(results_paths, with_overrides(FAST, plateau_iterations=plateau))
        t.layer_states = {k: LayerState(width_before_last=w) for k, w in t.network.widths().items()}
        t.history = [{"epoch": e, "train_loss": v, "val_loss": 1.0, "ema_pseudo_dice": 0.5}
                     for e, v in enumerate([1.0, 0.8])]
        t._scores = {name: [torch.ones(w)] for name, w in t.network.widths().items()}
        t._references = {name: 0 for name in t._scores}
        t.on_epoch_end(2, {"epoch": 2, "train_loss": 0.8, "val_loss": 1.0, "ema_pseudo_dice": 0.5,
                           "pseudo_dice": {}})
        steps[plateau] = {s.step for s in t.layer_states.values()}
    assert steps == {None: {1}, 4: {0}}


def test_protect_last_block_keeps_the_head_input_whole(results_paths):
    t = make(results_paths, with_overrides(FAST, protect_last_block=True))
    planned = dict(t.network.widths())
    last = list(planned)[-1]
    _epoch_end_with_zero_scores(t, [0.5], 0.5)
    widths = t.network.widths()
    assert widths[last] == planned[last]
    assert all(w == 1 for k, w in widths.items() if k != last)  # every other layer kept only its reference


def _weights(t):
    return {k: v.clone() for k, v in t.network.state_dict().items()}


def _epoch(t, dice, score=0.0, only=None):
    """One epoch end after the trainer's own history (flat losses): δ_prune is ``score`` for every channel of
    the layers ``only`` (default: all; the others score 1.0, never pruned), validation pseudo-Dice ``dice``."""
    t._scores = {n: [torch.full((w,), score if only is None or n in only else 1.0)]
                 for n, w in t.network.widths().items()}
    t._references = {n: 0 for n in t._scores}
    metrics = {"epoch": len(t.history), "train_loss": 1.0, "val_loss": 1.0, "ema_pseudo_dice": 0.5,
               "pseudo_dice": dice}
    t.on_epoch_end(len(t.history), metrics)
    t.history.append(metrics)
    return metrics


def test_rollback_undoes_removals_after_which_a_class_stays_collapsed(results_paths):
    t = make(results_paths, REWIND)
    planned, weights = dict(t.network.widths()), _weights(t)
    t.ema_dice = 0.85
    _epoch(t, {"1": 0.9, "2": 0.8})  # every layer keeps only its reference channel
    assert all(w == 1 for w in t.network.widths().values())
    # class 1 collapses (class 2 stays within 0.2 of its level): the first epoch waits and prunes nothing ...
    metrics = _epoch(t, {"1": 0.1, "2": 0.75}, score=1.0)
    assert metrics["rollback_wait"] == 0 and "rollback" not in metrics
    assert all(w == 1 for w in t.network.widths().values())
    # ... the second rewinds to the state before the removals and freezes the layers that lost channels
    t.ema_dice = 0.5
    metrics = _epoch(t, {"1": 0.05, "2": 0.8}, score=1.0)
    assert metrics["rollback"] == {"to_epoch": 0, "classes": {"1": 0.05}, "frozen": sorted(planned)}
    assert t.network.widths() == planned
    assert all(torch.equal(v, weights[k]) for k, v in t.network.state_dict().items())
    assert {k: r["removed"] for k, r in metrics["pruning"].items()} == {k: 1 - w for k, w in planned.items()}
    assert t.ema_dice == 0.85 and t.class_ema == {"1": 0.9, "2": 0.8}
    assert all(s.frozen for s in t.layer_states.values())
    t.output_dir.mkdir(parents=True, exist_ok=True)
    t.write_metrics()  # pruning.jsonl marks the rewind, for RandomTrainer's replay
    assert json.loads((t.output_dir / "pruning.jsonl").read_text().splitlines()[2])["undoes"] == 0
    assert t.summary_extras()["rollbacks"] == [{"epoch": 2, **metrics["rollback"]}]
    t.history = [{**h, "lr": 0.01, "epoch_time": 1.0, "data_wait": 0.0} for h in t.history]
    t.draw_progress(force=True)  # the widths panel marks the rewind
    assert (t.output_dir / "progress.png").stat().st_size > 0
    # training goes on with the restored optimizer state, and the frozen layers lose nothing more
    t.network.train()
    sum(o.float().mean() for o in t.network(torch.randn(1, 1, *t.cfg.patch_size))).backward()
    t.optimizer.step()
    metrics = _epoch(t, {"1": 0.9, "2": 0.8})
    assert "rollback" not in metrics and t.network.widths() == planned
    assert all(r.get("frozen") for r in metrics["pruning"].values())


def test_rollback_leaves_dips_and_noise_alone_and_is_off_by_default(results_paths):
    t = make(results_paths, REWIND)
    planned = dict(t.network.widths())
    first = list(planned)[:1]
    _epoch(t, {"1": 0.9, "2": 0.8}, only=first)
    assert "rollback" not in _epoch(t, {"1": 0.75, "2": float("nan")}, score=1.0)  # within 0.2; no figure
    assert "rollback_wait" in _epoch(t, {"1": 0.3, "2": 0.8})  # one epoch down: no pruning while it waits ...
    assert {k: w for k, w in t.network.widths().items() if k not in first} == {k: w for k, w in planned.items()
                                                                             if k not in first}
    assert "rollback" not in _epoch(t, {"1": 0.8, "2": 0.8}, score=1.0)  # ... and back: a dip, nothing undone
    assert not any(s.frozen for s in t.layer_states.values()) and t.network.widths()[first[0]] == 1
    for _ in range(ROLLBACK_WINDOW):  # a collapse long after the last removals has another cause
        _epoch(t, {"1": 0.9, "2": 0.8}, score=1.0)
    for _ in range(2):
        assert not {"rollback", "rollback_wait"} & set(_epoch(t, {"1": 0.0, "2": 0.8}, score=1.0))
    paper = make(results_paths)
    _epoch(paper, {"1": 0.9, "2": 0.8})
    assert paper._undo == []  # nothing kept to undo
    for _ in range(2):
        assert not {"rollback", "rollback_wait"} & set(_epoch(paper, {"1": 0.0, "2": 0.8}, score=1.0))
    assert all(w == 1 for w in paper.network.widths().values())


def test_with_the_rewind_the_last_epoch_ends_remove_nothing(results_paths):
    config = with_overrides(REWIND, epochs=4)
    t = make(results_paths, config)
    planned = dict(t.network.widths())
    layers = list(planned)
    for e in range(config.epochs - ROLLBACK_CHECK_EPOCHS):  # each epoch end removes from one more layer ...
        metrics = _epoch(t, {"1": 0.9, "2": 0.8}, only=layers[e:e + 1])
        assert t.network.widths()[layers[e]] == 1 and not metrics["sauron_paused"]
    for _ in range(ROLLBACK_CHECK_EPOCHS):  # ... but the rewind could not check removals at the last two
        metrics = _epoch(t, {"1": 0.9, "2": 0.8})
        assert metrics["sauron_paused"] and not any(r["removed"] for r in metrics["pruning"].values())
    assert t.network.widths()[layers[2]] == planned[layers[2]]
    paper = make(results_paths, with_overrides(FAST, epochs=4))  # without the rewind the paper prunes to the end
    for e in range(4):
        _epoch(paper, {"1": 0.9, "2": 0.8}, only=layers[e:e + 1])
    assert all(paper.network.widths()[k] == 1 for k in layers[:4])


def test_the_last_epoch_ends_removals_are_validated_again_and_a_fall_is_reported(results_paths):
    t = make(results_paths)
    t.output_dir.mkdir(parents=True, exist_ok=True)
    calls = []

    def validate_on(epoch, stream):  # the final network, on the last epoch's validation batches
        calls.append((epoch, stream, t.network.widths()))
        return 0.5, {"1": 0.9, "2": 0.1}
    t.validate_on = validate_on
    first = list(t.network.widths())[:1]
    _epoch(t, {"1": 0.9, "2": 0.8}, only=first)  # the last epoch end removes channels after its validation
    t.check_last_epoch_end("val stream")
    assert calls == [(0, "val stream", t.network.widths())]
    (warning,) = [w for w in t.warnings() if "last epoch end" in w]
    assert f"{first[0]} {default_widths(t.cfg.network)[first[0]]} → 1" in warning
    assert "class 2 (vessel) 0.800 → 0.100" in warning and "lesion" not in warning
    last = json.loads((t.output_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["last_removals_pseudo_dice"] == {"1": 0.9, "2": 0.1}
    # within LAST_REMOVALS_DROP: no warning
    t.history[-1]["last_removals_pseudo_dice"] = {"1": 0.9, "2": 0.8 - LAST_REMOVALS_DROP + 0.01}
    assert not [w for w in t.warnings() if "last epoch end" in w]
    # an epoch end that removed nothing left the network its validation saw: nothing to check
    calls.clear()
    _epoch(t, {"1": 0.9, "2": 0.8}, score=1.0)
    t.check_last_epoch_end("val stream")
    assert calls == [] and "last_removals_pseudo_dice" not in t.history[-1]


def test_fit_validates_what_the_last_epoch_end_removed(results_paths):
    t = make(results_paths)
    layers, select = list(t.network.widths()), t.select

    def one_channel_per_epoch(epoch, metrics):  # every epoch end, the last one too, removes a channel
        select(epoch, metrics)
        return {layers[epoch]: torch.arange(t.network.widths()[layers[epoch]] - 1)}
    t.select = one_channel_per_epoch
    t.fit(progress=False)
    lines = [json.loads(x) for x in (t.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["removed"] for r in t.history[-1]["pruning"].values()) == 1
    assert set(lines[-1]["last_removals_pseudo_dice"]) == set(lines[-1]["pseudo_dice"])
    assert all("last_removals_pseudo_dice" not in x for x in lines[:-1])


def test_a_second_rollback_goes_one_pruning_further_back(results_paths):
    t = make(results_paths, REWIND)
    planned = dict(t.network.widths())
    first, second = list(planned)[:1], list(planned)[1:2]
    for layers in (first, second):  # two epoch ends, each removing from one layer
        _epoch(t, {"1": 0.9}, only=layers)
    assert t.network.widths()[first[0]] == 1 and t.network.widths()[second[0]] == 1
    for frozen in (second, first):
        assert "rollback_wait" in _epoch(t, {"1": 0.0}, score=1.0)
        assert _epoch(t, {"1": 0.0}, score=1.0)["rollback"]["frozen"] == frozen
    assert t.network.widths() == planned
    assert {n for n, st in t.layer_states.items() if st.frozen} == {*first, *second}
    assert not {"rollback", "rollback_wait"} & set(_epoch(t, {"1": 0.0}, score=1.0))  # nothing left to undo


def test_sauron_prunes_in_bf16_without_nan(results_paths, monkeypatch):
    import sauronnet.precision
    monkeypatch.setattr(sauronnet.precision, "native_bf16", lambda: True)  # same numbers, only slower, here
    t = make(results_paths, with_overrides(FAST, precision="bf16"))
    assert t.precision == "bf16"
    summary = t.fit(progress=False)
    losses = [h["train_loss"] for h in t.history] + [h["val_loss"] for h in t.history]
    assert all(math.isfinite(v) for v in losses)
    assert summary["pruning"]["flops_after"] < summary["pruning"]["flops_before"]
    assert all(math.isfinite(v) for v in summary["mean_dice"].values() if v == v)


def test_width_floor_keeps_a_fraction_of_every_planned_layer(results_paths):
    t = make(results_paths, with_overrides(FAST, width_floor=0.3))
    planned = dict(t.network.widths())
    # distinct scores, all below the threshold: the floor keeps the reference and the channels least like it
    t._scores = {n: [torch.linspace(0.0, 0.2, w)] for n, w in planned.items()}
    t._references = {n: 0 for n in planned}
    t.on_epoch_end(0, {"epoch": 0, "train_loss": 1.0, "val_loss": 1.0, "ema_pseudo_dice": 0.5, "pseudo_dice": {}})
    widths = t.network.widths()
    floors = {n: math.ceil(0.3 * w) for n, w in planned.items()}
    assert widths == floors
    removed = sum(planned.values()) - sum(widths.values())
    assert removed > 0
    # a second epoch end removes nothing more
    t._scores = {n: [torch.zeros(w)] for n, w in widths.items()}
    t._references = {n: 0 for n in widths}
    t.on_epoch_end(1, {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "ema_pseudo_dice": 0.5, "pseudo_dice": {}})
    assert t.network.widths() == floors


def test_min_channels_keeps_that_many_channels_or_the_planned_width(results_paths):
    t = make(results_paths, with_overrides(FAST, min_channels=12, width_floor=0.1))
    planned = dict(t.network.widths())
    assert min(planned.values()) < 12 < max(planned.values())  # the test plan has layers on both sides
    t._scores = {n: [torch.linspace(0.0, 0.2, w)] for n, w in planned.items()}
    t._references = {n: 0 for n in planned}
    t.on_epoch_end(0, {"epoch": 0, "train_loss": 1.0, "val_loss": 1.0, "ema_pseudo_dice": 0.5, "pseudo_dice": {}})
    # the larger of the two floors: 12 channels, a layer planned narrower whole; ⌈0.1 w⌉ is below 12 everywhere
    assert t.network.widths() == {n: min(12, w) for n, w in planned.items()}


def test_min_channels_must_be_positive():
    import pytest
    with pytest.raises(ValueError, match="min_channels"):
        with_overrides(FAST, min_channels=0)


def test_width_floor_removes_the_nearest_duplicates_first():
    from trainers.sauron import _at_most
    score = torch.tensor([0.0, 0.05, 0.01, 0.5, 0.02])
    prune = torch.tensor([False, True, True, False, True])
    chosen = torch.nonzero(_at_most(prune, score, 2)).flatten().tolist()
    assert chosen == [2, 4]
    assert torch.equal(_at_most(prune, score, 5), prune)
    assert not _at_most(prune, score, -1).any()


def test_width_floor_must_be_a_fraction():
    import pytest
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="width_floor"):
            with_overrides(FAST, width_floor=bad)


def test_hold_until_learned_waits_for_every_class_then_never_again(results_paths):
    planned = sum(default_widths(make(results_paths).cfg.network).values())
    t = make(results_paths, with_overrides(FAST, hold_until_learned=0.5))
    states = dict(t.layer_states)
    metrics = _epoch(t, {"1": 0.9, "2": 0.1})  # class 2's EMA (it starts at its first value) is below 0.5
    assert metrics["sauron_paused"] and metrics["sauron_waits_for"] == {"2": 0.1}
    assert sum(t.network.widths().values()) == planned and t.layer_states == states  # no step, no removal
    assert "never pruned" in t.warnings()[-1] and "class 2 (vessel): pseudo-Dice EMA 0.100" in t.warnings()[-1]
    t.class_ema["2"] = 0.45
    metrics = _epoch(t, {"1": 0.9, "2": 0.95})  # EMA 0.9 * 0.45 + 0.1 * 0.95 = 0.5: learned, pruning starts
    assert not metrics["sauron_paused"] and "sauron_waits_for" not in metrics
    assert all(w == 1 for w in t.network.widths().values()) and t.hold_released_at == 1
    assert t.summary_extras()["hold_released_at"] == 1
    t.class_ema["2"] = 0.0  # a later dip is the rewind's and the Dice guard's business, not this hold's
    assert not _epoch(t, {"1": 0.9, "2": 0.0}, score=1.0)["sauron_paused"]
    assert load_extras_roundtrip(t).hold_released_at == 1
    paper = make(results_paths)  # off by default, as the paper
    assert not _epoch(paper, {"1": 0.9, "2": 0.1})["sauron_paused"]
    assert all(w == 1 for w in paper.network.widths().values())


def load_extras_roundtrip(t):
    """A fresh trainer of the same configuration that loaded ``t``'s checkpoint extras (as --continue does)."""
    other = make(t.paths, t.config)
    other.load_checkpoint_extras(t.checkpoint_extras())
    return other


def test_hold_until_learned_must_be_a_dice():
    import pytest
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="hold_until_learned"):
            with_overrides(FAST, hold_until_learned=bad)


def test_rollback_isolate_finds_the_one_layer_whose_removal_broke_a_class(results_paths):
    t = make(results_paths, with_overrides(REWIND, rollback_isolate=True))
    planned = dict(t.network.widths())
    a, b, c = list(planned)[:3]
    _epoch(t, {"1": 0.9}, only=[a, b])  # two layers lose channels at one epoch end ...
    assert "rollback_wait" in _epoch(t, {"1": 0.0}, score=1.0)
    metrics = _epoch(t, {"1": 0.0}, score=1.0)  # ... a class collapses: undone, but neither is frozen
    assert metrics["rollback"]["frozen"] == [] and metrics["rollback"]["suspects"] == sorted([a, b])
    assert t.network.widths() == planned
    assert {n for n, st in t.layer_states.items() if st.suspect} == {a, b}
    assert not any(st.frozen for st in t.layer_states.values())
    # a suspect waits while another layer loses channels ...
    _epoch(t, {"1": 0.9}, only=[a, c])
    widths = t.network.widths()
    assert widths[a] == planned[a] and widths[c] == 1
    # ... and of two suspects the first goes alone
    _epoch(t, {"1": 0.9}, only=[a, b])
    widths = t.network.widths()
    assert widths[a] == 1 and widths[b] == planned[b]
    # the class collapses after that lone removal: its layer is frozen, the other stays a suspect
    assert "rollback_wait" in _epoch(t, {"1": 0.0}, score=1.0)
    assert _epoch(t, {"1": 0.0}, score=1.0)["rollback"]["frozen"] == [a]
    assert t.network.widths()[a] == planned[a]
    assert t.layer_states[a].frozen and not t.layer_states[a].suspect and t.layer_states[b].suspect
    # b's lone removal passes ROLLBACK_WINDOW epochs without a collapse: b is cleared
    _epoch(t, {"1": 0.9}, only=[b])
    assert t.network.widths()[b] == 1 and t.layer_states[b].suspect
    for _ in range(ROLLBACK_WINDOW + 1):
        _epoch(t, {"1": 0.9}, score=1.0)
    assert not t.layer_states[b].suspect


def test_rollback_isolate_needs_the_rollback():
    import pytest
    with pytest.raises(ValueError, match="rollback_isolate"):
        with_overrides(FAST, rollback_isolate=True)


def test_distillation_leaves_the_feature_map_hooks_on_the_pruned_network(results_paths, tmp_path):
    start = make(Paths(results_paths.raw, results_paths.preprocessed, tmp_path / "start"),
                 with_overrides(FAST, epochs=1))
    start.fit(progress=False)
    t = make(results_paths, with_overrides(FAST, distill=1.0))
    t.initialize_from(start.output_dir / "checkpoint_final.pth")
    t.load_teacher(start.output_dir / "checkpoint_final.pth")
    assert not any(m._forward_hooks for m in t.teacher.modules())
    assert all(t.network.layer(name)._forward_hooks for name in t.network.widths())


def test_cluster_epochs_hold_the_schedule_for_the_first_epochs_only(results_paths):
    import pytest
    t = make(results_paths, with_overrides(FAST, cluster_epochs=2))
    planned, states = dict(t.network.widths()), dict(t.layer_states)
    for _ in range(2):  # every channel would go: the clustering term acts alone, no step and no removal
        metrics = _epoch(t, {"1": 0.9})
        assert metrics["sauron_paused"] and t.network.widths() == planned and t.layer_states == states
    assert not _epoch(t, {"1": 0.9})["sauron_paused"]
    assert all(w == 1 for w in t.network.widths().values())
    assert not _epoch(make(results_paths), {"1": 0.9})["sauron_paused"]  # off by default, as the paper
    with pytest.raises(ValueError, match="cluster_epochs"):
        with_overrides(FAST, cluster_epochs=-1)
