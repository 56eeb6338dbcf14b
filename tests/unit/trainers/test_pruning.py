"""What every pruning trainer reports about the classes it learned (trainers.pruning)."""
import math

from sauronnet.networks.unet import default_widths
from sauronnet.plans import Plans
from trainers.baselines import L1Trainer, OneShotConfig
from trainers.pruning import LATE_LEARNING_FLOPS, learned_epochs


def _history(planned, dice_per_epoch, pruned_from=None, widths=None):
    """Epochs with validation pseudo-Dice ``dice_per_epoch`` [(class 1, class 2)] of a network at ``planned``
    widths; from epoch ``pruned_from`` on it has ``widths`` (channels removed at that epoch's end)."""
    rows = []
    for e, (d1, d2) in enumerate(dice_per_epoch):
        now = widths if pruned_from is not None and e >= pruned_from else planned
        layers = {k: {"width": now[k], "removed": int(e == pruned_from)} for k in planned}
        rows.append({"epoch": e, "pseudo_dice": {"1": d1, "2": d2}, "pruning": layers})
    return rows


def make(paths):
    plans = Plans.load(paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
    return L1Trainer(plans, "3d_fullres", "0", paths, OneShotConfig(epochs=2, iterations_per_epoch=2,
                                                                     val_iterations=1, num_workers=0,
                                                                     keep_flops=0.5), "cpu")


def test_learned_epochs_follow_each_class_ema_up_to_half_its_best():
    # class 1 at 0.9 from the start (its EMA starts there); class 2 at 0 for 10 epochs, then 0.9: its EMA reaches
    # half of its best (0.9 * (1 - 0.9^10) = 0.586 after ten epochs at 0.9) after ceil(log(1 - 0.293/0.9)/log 0.9)
    history = [{"epoch": e, "pseudo_dice": {"1": 0.9, "2": 0.0 if e < 10 else 0.9, "3": 0.01}} for e in range(20)]
    learned = learned_epochs(history)
    assert learned["1"] == 0 and learned["3"] is None  # "3" never rose above NEVER_LEARNED
    best = 0.9 * (1 - 0.9 ** 10)
    assert learned["2"] == 10 + math.ceil(math.log(1 - 0.5 * best / 0.9) / math.log(0.9)) - 1
    # a class absent from validation (NaN) keeps its EMA: the absence is not a Dice of 0
    history[3]["pseudo_dice"]["1"] = math.nan
    assert learned_epochs(history)["1"] == 0
    # a class first seen at epoch 2: its EMA starts there (read as Dice 0, it would reach 0.4 only epochs later)
    for h, v in zip(history, [math.nan, math.nan] + [0.8] * 18):
        h["pseudo_dice"]["4"] = v
    assert learned_epochs(history)["4"] == 2


def test_a_class_learned_only_by_the_pruned_network_is_reported(results_paths):
    t = make(results_paths)
    planned = default_widths(t.cfg.network)
    narrow = {k: max(1, w // 8) for k, w in planned.items()}  # far more than LATE_LEARNING_FLOPS removed
    assert 1 - t.network_flops(narrow) / t.network_flops(None) >= LATE_LEARNING_FLOPS
    late = [(0.9, 0.0)] * 10 + [(0.9, 0.9)] * 20
    t.history = _history(planned, late, pruned_from=3, widths=narrow)
    (warning,) = t.warnings()
    assert "class 2 (vessel) was learned only at epoch 15 " in warning and "--init-from" in warning
    t.history = _history(planned, [(0.9, 0.9)] * 30, pruned_from=3, widths=narrow)
    assert t.warnings() == []  # learned before the removals
    t.history = _history(planned, late)
    assert t.warnings() == []  # nothing removed: not the pruning's doing
    t.history = _history(planned, [(0.9, 0.0)] * 30, pruned_from=3, widths=narrow)
    (warning,) = t.warnings()
    assert "class 2 (vessel) was never learned" in warning
