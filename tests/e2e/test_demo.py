"""sauron_demo end to end with a tiny budget: both phases (unpruned Trainer, then Sauron --init-from), both
models predicted and scored, and the report."""
import functools
import json

import sauronnet.demo
from sauronnet import cli
from sauronnet.checkpoint import load_checkpoint
from tests.conftest import SMALL_DEMO


def test_demo_trains_prunes_and_reports(data_roots, monkeypatch, capsys):
    monkeypatch.setattr(sauronnet.demo, "DemoSpec", functools.partial(
        sauronnet.demo.DemoSpec, n_train=5, n_test=1, size_xyz=SMALL_DEMO.size_xyz, size_jitter=2))
    monkeypatch.setattr(cli, "DEMO_TRAIN", ["--epochs", "1", "--iters", "2", "--val-iters", "1", "--workers", "0"])
    monkeypatch.setattr(cli, "DEMO_PRUNE", ["--epochs", "2", "--iters", "2", "--val-iters", "1", "--workers", "0",
                                            "--kappa", "1", "--tau-max", "0.9", "--rho", "1", "--lambda", "0",
                                            "--rollback-drop", "0.2"])
    assert cli.demo_main(["--no-progress"]) == 0
    out = capsys.readouterr().out
    report = out[out.index("== SauronNet demo report =="):]
    for text in ("unpruned   pruned by Sauron", "test Dice lesion", "test Dice vessel", "forward FLOPs per patch",
                 "% removed", "--stop-after 10", "--lambda 0, no clustering term", "--rollback-drop 0.2, undo"):
        assert text in report
    results = data_roots[2] / "Dataset001_Demo"
    pruned = results / "SauronTrainer__cpu__3d_fullres" / "fold_all"
    summary = json.loads((pruned / "pruning_summary.json").read_text())
    assert summary["epochs_trained"] == 2
    # the pruning phase started from the unpruned model: its first epoch's checkpoint history is the Sauron one,
    # and the unpruned model is kept beside it
    assert load_checkpoint(pruned / "checkpoint_final.pth")["trainer"] == "SauronTrainer"
    assert (results / "Trainer__cpu__3d_fullres" / "fold_all" / "checkpoint_final.pth").is_file()
    assert "initialised from" in (pruned / "training.log").read_text()
    for name in ("Trainer", "SauronTrainer"):
        scores = json.loads((results / f"demo_test_predictions_{name}" / "summary.json").read_text())
        assert set(scores["mean"]) == {"1", "2"}


def test_every_non_budget_flag_of_the_demo_pruning_phase_is_explained_in_its_report():
    budget = {"--epochs", "--iters", "--val-iters"}
    flags = [f for f in cli.DEMO_PRUNE if f.startswith("--") and f not in budget]  # flag names, not values
    assert flags, "the demo's pruning phase should say which non-paper settings it uses"
    assert set(flags) == set(cli.DEMO_NON_PAPER)
    assert all(len(reason) > 20 for reason in cli.DEMO_NON_PAPER.values())
