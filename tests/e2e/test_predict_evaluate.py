"""Train briefly (Sauron, pruning forced early), then sauron_predict on the demo test images, sauron_evaluate
against their reference labels, and sauron_info on the pruned model."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from sauronnet import cli
from sauronnet.inference.sliding_window import Workers
from tests.conftest import point_env



def test_predict_and_evaluate_with_the_pruned_model(pruned_model, tmp_path, monkeypatch, capsys):
    paths, trainer = pruned_model
    chosen = json.loads((trainer.output_dir / "postprocessing.json").read_text())["keep_largest_component"]
    assert set(chosen) <= {1, 2}
    point_env(paths, monkeypatch)
    images = paths.raw / "Dataset001_Demo" / "imagesTs"
    out = tmp_path / "pred"
    assert cli.predict_main(["-i", str(images), "-o", str(out), "-d", "1", "--disable-tta", "--no-progress",
                             "--save-probabilities"]) == 0
    names = sorted(p.name for p in out.glob("*.nii.gz"))
    assert names == sorted(p.name.replace("_0000", "") for p in images.iterdir())
    for name in names:
        src = sitk.ReadImage(str(images / name.replace(".nii.gz", "_0000.nii.gz")))
        seg = sitk.ReadImage(str(out / name))
        assert seg.GetSize() == src.GetSize()
        np.testing.assert_allclose(seg.GetSpacing(), src.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(seg.GetOrigin(), src.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(seg.GetDirection(), src.GetDirection(), atol=1e-6)
        probs = np.load(out / name.replace(".nii.gz", ".npz"))["probabilities"]
        assert probs.shape == (3, *sitk.GetArrayViewFromImage(src).shape)
        np.testing.assert_allclose(probs.sum(0), 1, atol=1e-4)
    assert cli.evaluate_main(["-ref", str(paths.raw / "Dataset001_Demo" / "labelsTs"), "-pred", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == [1, 2] and len(summary["cases"]) == len(names)
    assert 0 <= summary["foreground_mean_dice"] <= 1
    assert "mean foreground Dice" in capsys.readouterr().out


def test_continue_skips_written_cases_and_bad_inputs_do_not_stop_others(pruned_model, tmp_path, monkeypatch, capsys):
    paths, trainer = pruned_model
    point_env(paths, monkeypatch)
    images = paths.raw / "Dataset001_Demo" / "imagesTs"
    broken = tmp_path / "in"
    broken.mkdir()
    for p in images.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "zzz_0000.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "pred"
    assert cli.predict_main(["-i", str(broken), "-o", str(out), "-m", str(trainer.output_dir.parent),
                             "--disable-tta", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "zzz_0000.nii.gz" in err
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == len(list(images.iterdir())) and not any(n.startswith(".") for n in written)
    stamp = (out / written[0]).stat().st_mtime_ns
    (broken / "zzz_0000.nii.gz").unlink()
    assert cli.predict_main(["-i", str(broken), "-o", str(out), "-m", str(trainer.output_dir.parent),
                             "--disable-tta", "--no-progress", "--continue"]) == 0
    assert (out / written[0]).stat().st_mtime_ns == stamp


def test_info_reports_the_pruned_widths(pruned_model, capsys):
    _, trainer = pruned_model
    assert cli.info_main([str(trainer.output_dir.parent)]) == 0
    out = capsys.readouterr().out
    widths = trainer.network.widths()
    assert f"{widths['enc0.0']}/8" in out and "total: parameters" in out and "GFLOP" in out


def test_info_times_the_model_against_the_unpruned_network(pruned_model, capsys):
    _, trainer = pruned_model
    assert cli.info_main([str(trainer.output_dir.parent), "--speed", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "one network call of" in out and "(float32, 1 thread(s))" in out and "against the unpruned network's" in out
    with pytest.raises(SystemExit):
        cli.info_main([str(trainer.output_dir.parent), "--speed", "--repeats", "0"])


def test_info_repeats_the_warnings_of_training(pruned_model, tmp_path, capsys):
    import shutil
    _, trainer = pruned_model
    fold = tmp_path / "fold_0"
    shutil.copytree(trainer.output_dir, fold)
    summary = json.loads((fold / "pruning_summary.json").read_text())
    summary["warnings"] = ["class 2 (vessel) was learned only at epoch 190"]
    (fold / "pruning_summary.json").write_text(json.dumps(summary))
    assert cli.info_main([str(fold)]) == 0
    assert "warning from training: class 2 (vessel) was learned only at epoch 190" in capsys.readouterr().out
    assert cli.info_main([str(fold), "--checkpoint", "latest"]) == 0  # the summary is about the final model
    assert "warning from training" not in capsys.readouterr().out


@pytest.mark.parametrize("flag, values", [("-np", (1, 2)), ("--tile-workers", (1, 3))])
def test_worker_processes_and_tile_workers_give_the_same_outputs(pruned_model, tmp_path, monkeypatch, flag, values):
    paths, trainer = pruned_model
    point_env(paths, monkeypatch)
    images = paths.raw / "Dataset001_Demo" / "imagesTs"
    from sauronnet.inference import predictor
    pools = []
    monkeypatch.setattr(predictor, "Workers", lambda count, init: pools.append(count) or Workers(count, init))
    outs = {}
    for i, n in enumerate(values, 1):
        outs[i] = tmp_path / f"run{n}"
        assert cli.predict_main(["-i", str(images), "-o", str(outs[i]), "-m", str(trainer.output_dir.parent),
                                 "--disable-tta", "--no-progress", flag, str(n)]) == 0
    if flag == "--tile-workers":
        assert set(pools) == set(values)  # these cases' few tiles run inline; test_sliding_window runs workers
    for p in sorted(outs[1].glob("*.nii.gz")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(outs[2] / p.name)))
        np.testing.assert_array_equal(a, b)


def test_predict_does_not_take_training_flags():
    import pytest
    with pytest.raises(SystemExit):
        cli.predict_main(["-i", "x", "-o", "y", "-m", "z", "--match", "w"])
