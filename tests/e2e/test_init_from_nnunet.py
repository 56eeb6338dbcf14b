"""Fine-tuning and pruning an imported nnU-Net model, as a user runs it:

sauron_import_nnunet → sauron_plan_and_preprocess --plans → sauron_train --init-from → sauron_predict.

The nnU-Net model is the committed fixture ``tests/fixtures/nnunet_tiny`` (made by nnU-Net v2 itself from the
synthetic dataset regenerated here with the same spec).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sauronnet import cli
from sauronnet.checkpoint import load_checkpoint
from sauronnet.demo import DemoSpec, write_demo_dataset
from sauronnet.paths import Paths
from tests.conftest import point_env

FIXTURE_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "nnunet_tiny" / "model"
#: the dataset nnU-Net trained the fixture on (tests/fixtures/make_nnunet_tiny.py)
FIXTURE_SPEC = DemoSpec(dataset_id=91, name="NnTiny", n_train=5, n_test=1, size_xyz=(28, 28, 10), size_jitter=1,
                        seed=3)
TRAIN = ["--epochs", "1", "--iters", "2", "--val-iters", "1", "--workers", "0", "--no-progress", "--threads", "1"]


@pytest.fixture
def imported(tmp_path, monkeypatch) -> tuple[Paths, Path]:
    paths = Paths.under(tmp_path)
    point_env(paths, monkeypatch)
    write_demo_dataset(paths.raw, FIXTURE_SPEC)
    model = tmp_path / "imported"
    assert cli.import_nnunet_main(["-m", str(FIXTURE_MODEL), "-o", str(model)]) == 0
    return paths, model


def _val_dice(paths: Paths, trainer: str, preset: str) -> float:
    summary = paths.results / "Dataset091_NnTiny" / f"{trainer}__{preset}__3d_fullres" / "fold_0" / "validation"
    return json.loads((summary / "summary.json").read_text())["foreground_mean_dice"]


def test_fine_tune_and_prune_an_imported_nnunet_model(imported, capsys):
    paths, model = imported
    # training before preprocessing with the model's plans says how to fix it
    assert cli.train_main(["91", "0", "--init-from", str(model)] + TRAIN) == 1
    assert f"--plans {model / 'fold_0'}" in capsys.readouterr().err
    assert cli.plan_and_preprocess_main(["-d", "91", "--plans", str(model), "-np", "1", "--no-progress"]) == 0
    plans = json.loads((paths.preprocessed / "Dataset091_NnTiny" / "nnUNetPlans" / "plans.json").read_text())
    assert plans["dataset_name"] == "Dataset091_NnTiny" and list(plans["configurations"]) == ["3d_fullres"]

    # a tiny learning rate keeps the imported weights: the validation case is segmented like nnU-Net does it
    assert cli.train_main(["91", "0", "--init-from", str(model), "--lr", "1e-7"] + TRAIN) == 0
    assert "initialised from" in (paths.results / "Dataset091_NnTiny" / "SauronTrainer__nnUNetPlans__3d_fullres"
                                  / "fold_0" / "training.log").read_text()
    fine_tuned = _val_dice(paths, "SauronTrainer", "nnUNetPlans")
    assert fine_tuned > 0.4
    # the same two iterations from scratch segment nothing useful
    assert cli.train_main(["91", "0", "-tr", "Trainer"] + TRAIN) == 0
    assert _val_dice(paths, "Trainer", "nnUNetPlans") < fine_tuned - 0.3

    fold = paths.results / "Dataset091_NnTiny" / "SauronTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    ckpt = load_checkpoint(fold / "checkpoint_final.pth")
    assert ckpt["trainer"] == "SauronTrainer" and set(ckpt["extras"]["layer_states"]) == set(ckpt["widths"])
    out = paths.results / "pred"
    assert cli.predict_main(["-i", str(paths.raw / "Dataset091_NnTiny" / "imagesTs"), "-o", str(out), "-m",
                             str(fold.parent), "--no-progress"]) == 0
    assert (out / "nntiny_005.nii.gz").is_file()


def test_init_from_checks_the_model_matches_the_plans(imported, capsys):
    paths, model = imported
    assert cli.plan_and_preprocess_main(["-d", "91", "--preset", "cpu", "-np", "1", "--no-progress"]) == 0
    capsys.readouterr()
    # the cpu preset plans a different network: refused, with the command that fixes it
    assert cli.train_main(["91", "0", "-p", "cpu", "--init-from", str(model)] + TRAIN) == 1
    err = capsys.readouterr().err
    assert "planned differently" in err and "configuration network" in err and "--plans" in err


def test_init_from_starts_from_exactly_the_imported_weights(imported):
    from sauronnet.plans import Plans
    from trainers.base import Trainer, TrainerConfig

    paths, model = imported
    assert cli.plan_and_preprocess_main(["-d", "91", "--plans", str(model), "-np", "1", "--no-progress"]) == 0
    plans = Plans.load(paths.preprocessed / "Dataset091_NnTiny" / "nnUNetPlans" / "plans.json")
    trainer = Trainer(plans, "3d_fullres", "0", paths, TrainerConfig(num_workers=0), "cpu")
    trainer.initialize_from(model / "fold_0" / "checkpoint_final.pth")
    source = load_checkpoint(model / "fold_0" / "checkpoint_final.pth")["state_dict"]
    assert all(torch.equal(v, source[k]) for k, v in trainer.network.state_dict().items())
    assert trainer.optimizer.param_groups[0]["params"][0] is next(trainer.network.parameters())
    # a fine-tuning run may change the batch size (and with it the FLOP estimate) of the model's plans
    from dataclasses import replace
    cfg = replace(plans.configuration("3d_fullres"), batch_size=4, estimated_forward_gflops=1.0)
    bigger = Trainer(replace(plans, configurations={"3d_fullres": cfg}), "3d_fullres", "0", paths,
                     TrainerConfig(num_workers=0), "cpu")
    bigger.initialize_from(model / "fold_0" / "checkpoint_final.pth")


def test_plans_from_a_model_must_fit_the_dataset(imported, tmp_path, capsys):
    paths, model = imported
    spec = json.loads((paths.raw / "Dataset091_NnTiny" / "dataset.json").read_text())
    spec["labels"] = {"background": 0, "lesion": 1, "tube": 2}
    (paths.raw / "Dataset091_NnTiny" / "dataset.json").write_text(json.dumps(spec))
    assert cli.plan_and_preprocess_main(["-d", "91", "--plans", str(model), "-np", "1", "--no-progress"]) == 1
    assert "the model expects channels" in capsys.readouterr().err
    assert cli.plan_and_preprocess_main(["-d", "91", "--plans", str(tmp_path / "nowhere"), "--no-progress"]) == 1
    assert "no plans.json" in capsys.readouterr().err
