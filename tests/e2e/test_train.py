"""sauron_train as a user runs it: outputs, --continue, and survival of SIGKILL at any moment."""
import json
import os
import signal
import subprocess
import sys
import time

import torch

from sauronnet import cli
from sauronnet.checkpoint import load_checkpoint
from tests.conftest import env_of, point_env


def test_train_command_writes_every_output(results_paths, monkeypatch, capsys):
    point_env(results_paths, monkeypatch)
    argv = ["1", "0", "-tr", "Trainer", "--epochs", "2", "--iters", "2", "--val-iters", "1", "--workers", "1",
            "--no-progress"]
    assert cli.train_main(argv) == 0
    out = capsys.readouterr().out
    assert "validation Dice" in out
    fold = results_paths.results / "Dataset001_Demo" / "Trainer__cpu__3d_fullres" / "fold_0"
    for name in ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth", "plans.json",
                 "dataset.json", "training.log", "metrics.jsonl", "progress.png", "validation/summary.json"):
        assert (fold / name).is_file(), name
    assert len((fold / "metrics.jsonl").read_text().splitlines()) == 2
    assert "epoch 1:" in (fold / "training.log").read_text()
    assert set(json.loads((fold / "validation" / "summary.json").read_text())["mean_dice"]) == {"1", "2"}
    # --continue on a finished run only redoes the final validation
    assert cli.train_main(argv + ["--continue"]) == 0
    assert load_checkpoint(fold / "checkpoint_final.pth")["epoch"] == 2


def test_bad_fold_and_missing_plans(results_paths, monkeypatch, capsys):
    point_env(results_paths, monkeypatch)
    try:
        cli.train_main(["1", "7"])
        raise AssertionError("expected a usage error")
    except SystemExit as e:
        assert e.code == 2
    assert cli.train_main(["1", "0", "-p", "nnunet"]) == 1
    assert "run sauron_plan_and_preprocess -d Dataset001_Demo --preset nnunet" in capsys.readouterr().err


def test_sigkill_leaves_a_loadable_checkpoint_and_continue_finishes(results_paths, monkeypatch):
    env = {**os.environ, **env_of(results_paths)}
    argv = ["1", "0", "-tr", "Trainer", "--epochs", "6", "--iters", "3", "--val-iters", "1", "--workers", "0",
            "--no-progress", "--threads", "1"]
    code = f"import sys; from sauronnet.cli import train_main; sys.exit(train_main({argv!r}))"
    fold = results_paths.results / "Dataset001_Demo" / "Trainer__cpu__3d_fullres" / "fold_0"
    latest = fold / "checkpoint_latest.pth"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not latest.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        # kill in the middle of whatever comes next (training, or writing a checkpoint)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    ckpt = load_checkpoint(latest)  # loadable whatever the moment of the kill
    assert 1 <= ckpt["epoch"] <= 6
    point_env(results_paths, monkeypatch)
    assert cli.train_main(argv + ["--continue"]) == 0
    final = load_checkpoint(fold / "checkpoint_final.pth")
    assert final["epoch"] == 6 and len(final["history"]) == 6
    assert list(h["epoch"] for h in final["history"]) == list(range(6))
    assert not list(fold.glob(".*.tmp"))
    assert isinstance(final["state_dict"]["encoder.0.0.conv.weight"], torch.Tensor)


def test_bf16_on_a_cpu_without_native_bfloat16_is_refused_before_anything_is_written(results_paths, monkeypatch,
                                                                                      capsys):
    import sauronnet.precision
    point_env(results_paths, monkeypatch)
    monkeypatch.setattr(sauronnet.precision, "native_bf16", lambda: False)
    assert cli.train_main(["1", "0", "-tr", "Trainer", "--epochs", "1", "--precision", "bf16", "--device",
                           "cpu"]) == 1
    assert "no native bfloat16" in capsys.readouterr().err
    assert not (results_paths.results / "Dataset001_Demo").exists()


def test_baseline_from_the_command_line_matches_flops(results_paths, monkeypatch, capsys):
    import pytest
    point_env(results_paths, monkeypatch)
    argv = ["1", "0", "--epochs", "2", "--iters", "2", "--val-iters", "1", "--workers", "0", "--no-progress"]
    with pytest.raises(SystemExit) as e:
        cli.train_main(argv + ["-tr", "Trainer", "--keep-flops", "0.5"])
    assert e.value.code == 2
    assert "--keep-flops applies to CSGDTrainer, FPGMTrainer, L1Trainer" in capsys.readouterr().err
    assert cli.train_main(argv + ["-tr", "L1Trainer", "--keep-flops", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "pruning: parameters" in out
    summary = json.loads((results_paths.results / "Dataset001_Demo" / "L1Trainer__cpu__3d_fullres" / "fold_0" /
                          "pruning_summary.json").read_text())
    assert summary["method"] == "L1Trainer"
    assert 1 - summary["flops_removed_fraction"] == pytest.approx(0.5, rel=0.05)
    assert cli.train_main(argv + ["-tr", "UniformTrainer"]) == 1
    assert "--match" in capsys.readouterr().err


def test_hold_until_learned_from_the_command_line_reports_a_run_it_kept_from_pruning(results_paths, monkeypatch):
    point_env(results_paths, monkeypatch)
    argv = ["1", "0", "--epochs", "2", "--iters", "2", "--val-iters", "1", "--workers", "0", "--no-progress",
            "--tau0", "0.3", "--hold-until-learned", "0.99"]  # no class reaches 0.99 in two epochs
    assert cli.train_main(argv) == 0
    fold = results_paths.results / "Dataset001_Demo" / "SauronTrainer__cpu__3d_fullres" / "fold_0"
    summary = json.loads((fold / "pruning_summary.json").read_text())
    assert summary["hold_released_at"] is None and summary["flops_removed_fraction"] == 0
    assert any("Sauron never pruned: --hold-until-learned 0.99" in w for w in summary["warnings"])
    assert all(h["sauron_waits_for"] for h in load_checkpoint(fold / "checkpoint_final.pth")["history"])


def test_distill_from_the_start_model_and_continue(results_paths, monkeypatch, capsys):
    import pytest
    point_env(results_paths, monkeypatch)
    argv = ["1", "0", "--iters", "2", "--val-iters", "1", "--workers", "0", "--no-progress", "--threads", "1"]
    with pytest.raises(SystemExit) as e:
        cli.train_main(argv + ["--epochs", "1", "--distill", "1"])
    assert e.value.code == 2 and "--init-from" in capsys.readouterr().err
    assert cli.train_main(argv + ["--epochs", "1", "-tr", "Trainer"]) == 0
    start = results_paths.results / "Dataset001_Demo" / "Trainer__cpu__3d_fullres"
    assert cli.train_main(argv + ["--epochs", "1", "--init-from", str(start), "--distill", "1"]) == 0
    fold = results_paths.results / "Dataset001_Demo" / "SauronTrainer__cpu__3d_fullres" / "fold_0"
    assert "distillation from" in (fold / "training.log").read_text()
    # checkpoints do not hold the start model: --continue needs it again, and says so
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.train_main(argv + ["--epochs", "2", "--continue", "--distill", "1"])
    assert "--init-from" in capsys.readouterr().err
    assert cli.train_main(argv + ["--epochs", "2", "--continue", "--init-from", str(start), "--distill", "1"]) == 0
    assert load_checkpoint(fold / "checkpoint_final.pth")["epoch"] == 2
    assert (fold / "training.log").read_text().count("distillation from") == 2
