import numpy as np
import pytest
import torch

from sauronnet.plans import Plans
from sauronnet.checkpoint import load_checkpoint, network_from_checkpoint
from trainers.base import Trainer, TrainerConfig, poly_lr, with_overrides

TINY = TrainerConfig(epochs=3, iterations_per_epoch=2, val_iterations=1, num_workers=0, seed=3)


def make_trainer(paths, config=TINY, fold="0"):
    plans = Plans.load(paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
    return Trainer(plans, "3d_fullres", fold, paths, config, "cpu")


def test_poly_lr():
    assert poly_lr(0, 10, 0.01) == 0.01
    assert poly_lr(5, 10, 0.01) == pytest.approx(0.01 * 0.5 ** 0.9)


def test_overrides_skip_none():
    c = with_overrides(TrainerConfig(), epochs=5, seed=None)
    assert c.epochs == 5 and c.seed == TrainerConfig().seed


def test_split_uses_splits_file_or_all(results_paths):
    t = make_trainer(results_paths)
    assert len(t.train_ids) + len(t.val_ids) == 6 and not set(t.train_ids) & set(t.val_ids)
    t_all = make_trainer(results_paths, fold="all")
    assert t_all.train_ids == t_all.val_ids and len(t_all.train_ids) == 6


def test_checkpoint_round_trip_is_bit_exact(results_paths):
    t = make_trainer(results_paths, with_overrides(TINY, epochs=1))
    t.fit(progress=False)
    ckpt = load_checkpoint(t.output_dir / "checkpoint_final.pth")  # weights_only=True inside
    net, plans, config = network_from_checkpoint(ckpt, deep_supervision=True)
    x = torch.randn(1, 1, *t.cfg.patch_size)
    t.network.eval()
    net.eval()
    with torch.no_grad():
        for a, b in zip(t.network(x), net(x)):
            assert torch.equal(a, b)
    assert plans == t.plans and config == "3d_fullres"


def _weights(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_resume_reproduces_uninterrupted_training(results_paths, tmp_path):
    from sauronnet.paths import Paths
    straight = make_trainer(results_paths)
    straight.fit(progress=False)
    other = Paths(results_paths.raw, results_paths.preprocessed, tmp_path / "other")
    first = make_trainer(other, with_overrides(TINY, epochs=3))
    first.config = with_overrides(TINY, epochs=3)
    # train 1 of the 3 epochs, as if the process had been killed right after the first checkpoint
    train_stream, val_stream = first.make_streams()
    first.output_dir.mkdir(parents=True, exist_ok=True)
    first._run_epoch(train_stream, val_stream, progress=False)
    resumed = make_trainer(other)
    resumed.fit(resume=True, progress=False)
    assert resumed.epoch == 3 and len(resumed.history) == 3
    # CPU, same thread count, batches derived from (seed, epoch, index): exactly the same weights
    assert torch.equal(_weights(straight.network), _weights(resumed.network))
    assert list(h["train_loss"] for h in resumed.history) == [h["train_loss"] for h in straight.history]


def test_progress_plot_is_drawn_once_per_interval_and_after_the_last_epoch(results_paths, monkeypatch):
    import trainers.base as base
    drawn = []
    monkeypatch.setattr(base, "plot_progress", lambda history, path, panels: drawn.append(len(history)))
    t = make_trainer(results_paths, with_overrides(TINY, epochs=3))
    t.plot_interval = 3600.0
    t.fit(progress=False)
    assert drawn == [1, 3]  # the first epoch, then none within the interval, then after the last epoch
    drawn.clear()
    every = make_trainer(results_paths, with_overrides(TINY, epochs=2), fold="1")
    every.plot_interval = 0.0
    every.fit(progress=False)
    assert drawn == [1, 2, 2]


def test_metrics_record_the_time_spent_waiting_for_training_batches(results_paths, monkeypatch):
    import time

    from sauronnet.data.loader import BatchStream
    produce = BatchStream.batches

    def slow_batches(self, epoch, count):
        for batch in produce(self, epoch, count):
            time.sleep(0.3)
            yield batch

    monkeypatch.setattr(BatchStream, "batches", slow_batches)
    t = make_trainer(results_paths, with_overrides(TINY, epochs=1))
    t.fit(progress=False)
    waited = t.history[0]["data_wait"]
    # the training batches (2) each waited 0.3 s (plus their in-process production: no workers here); the
    # validation batch (1), also slowed, is part of the epoch time but not of the wait
    assert 0.6 <= waited < t.history[0]["epoch_time"] - 0.3


def test_outputs(results_paths):
    t = make_trainer(results_paths, with_overrides(TINY, epochs=2))
    summary = t.fit(progress=False)
    names = {p.name for p in t.output_dir.iterdir()}
    assert {"checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth", "plans.json", "dataset.json",
            "metrics.jsonl", "progress.png", "validation"} <= names
    lines = (t.output_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"pseudo_dice"' in lines[0] and '"epoch_time"' in lines[0]
    assert set(summary["mean_dice"]) == {"1", "2"} and len(summary["cases"]) == len(t.val_ids)
    # validation predictions are exported onto each case's original grid and scored against labelsTr
    assert {c["grid"] for c in summary["cases"]} == {"original"}
    import SimpleITK as sitk
    for case_id in t.val_ids:
        pred = sitk.ReadImage(str(t.output_dir / "validation" / f"{case_id}.nii.gz"))
        raw = sitk.ReadImage(str(results_paths.raw / "Dataset001_Demo" / "labelsTr" / f"{case_id}.nii.gz"))
        assert pred.GetSize() == raw.GetSize() and np.allclose(pred.GetOrigin(), raw.GetOrigin())
    from sauronnet.evaluation import dice_per_class, nanmean
    from sauronnet.io import read_seg
    for case in summary["cases"]:  # each case's Dice is the exported prediction's against its raw label map
        pred, _ = read_seg(t.output_dir / "validation" / f"{case['case']}.nii.gz")
        ref, _ = read_seg(results_paths.raw / "Dataset001_Demo" / "labelsTr" / f"{case['case']}.nii.gz")
        for c, d in dice_per_class(pred, ref, [1, 2]).items():
            assert case["dice"][str(c)] == pytest.approx(d, nan_ok=True)
    assert summary["foreground_mean_dice"] == pytest.approx(nanmean(summary["mean_dice"].values()), nan_ok=True)


def test_2d_configuration_trains_and_validates(results_paths):
    plans = Plans.load(results_paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
    t = Trainer(plans, "2d", "0", results_paths, with_overrides(TINY, epochs=1), "cpu")
    summary = t.fit(progress=False)
    assert t.network.plan.dim == 2 and len(summary["cases"]) == len(t.val_ids)
    assert (t.output_dir / "checkpoint_final.pth").is_file()


def test_a_lost_peer_stops_a_distributed_run_with_a_resume_hint(results_paths, monkeypatch):
    """What rank 0 says when another process dies (gloo raises a plain RuntimeError); other errors pass as they
    are. Rank 0 of a world of 2 here, without a process group: the patched epoch raises before any collective."""
    from sauronnet.distributed import DistributedRunError, World

    plans = Plans.load(results_paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
    t = Trainer(plans, "3d_fullres", "0", results_paths, TINY, "cpu", World(0, 2))
    assert list(t.world.positions) == [0] and t.world.share == 1.0  # batch 2: one sample per rank

    def lost(*args):
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:40112: Connection reset by peer")

    monkeypatch.setattr(t, "_run_epoch", lost)
    with pytest.raises(DistributedRunError, match=r"rank 0 of 2 stopped in epoch 0: another training process died.*"
                                                  r"checkpoint_latest.pth .*--continue"):
        t.fit(progress=False)

    def bug(*args):
        raise RuntimeError("Input type (float) and bias type (double) should be the same")

    monkeypatch.setattr(t, "_run_epoch", bug)
    with pytest.raises(RuntimeError, match="bias type") as info:
        t.fit(progress=False)
    assert not isinstance(info.value, DistributedRunError)


def test_distillation_keeps_the_start_model_frozen_and_adds_its_kl(results_paths, tmp_path):
    from sauronnet.paths import Paths
    trained = make_trainer(results_paths, with_overrides(TINY, epochs=1))
    trained.fit(progress=False)
    start = trained.output_dir / "checkpoint_final.pth"
    other = Paths(results_paths.raw, results_paths.preprocessed, tmp_path / "other")
    plain, distilled = make_trainer(other), make_trainer(other, with_overrides(TINY, distill=2.0))
    for t in (plain, distilled):
        t.initialize_from(start)
    distilled.load_teacher(start)
    assert plain.teacher is None and not distilled.teacher.training
    teacher_before = _weights(distilled.teacher)
    assert torch.equal(teacher_before, _weights(distilled.network))
    train_stream, _ = plain.make_streams()
    with train_stream:
        batch = next(iter(train_stream.batches(0, 1)))
    # the network starts as the start model: nothing to distil, the same loss and the same step
    assert distilled.train_step(batch)["loss"] == pytest.approx(plain.train_step(batch)["loss"], abs=1e-6)
    assert torch.allclose(_weights(distilled.network), _weights(plain.network), atol=1e-6)
    # once it has moved, the term is 2 x KL(start model || network) > 0, and the start model never moves
    kl = distilled.train_step(batch)["loss"] - plain.train_step(batch)["loss"]
    assert kl > 1e-6
    assert torch.equal(_weights(distilled.teacher), teacher_before)
    assert not any(p.requires_grad for p in distilled.teacher.parameters())


def test_distillation_needs_the_start_model(results_paths):
    t = make_trainer(results_paths, with_overrides(TINY, distill=1.0))
    with pytest.raises(ValueError, match="--init-from"):
        t.fit(progress=False)
    with pytest.raises(ValueError, match="distill must be 0 or more"):
        with_overrides(TINY, distill=-1.0)
