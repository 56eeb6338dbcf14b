"""nnU-Net v2 model import, checked against a real nnU-Net model and nnU-Net's own prediction.

``tests/fixtures/nnunet_tiny`` was made by nnU-Net v2.8.1 itself (``tests/fixtures/make_nnunet_tiny.py``): a
PlainConvUNet trained 250 iterations and ``nnUNetv2_predict``'s label map and probabilities for one image, so
these tests need no nnU-Net installation.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sauronnet import cli
from sauronnet.evaluation import dice_per_class
import sauronnet.precision
from sauronnet.inference.predictor import Predictor
from sauronnet.interop.nnunet import (NnUNetImportError, convert_plans, convert_state_dict, import_nnunet_model,
                                      load_nnunet_checkpoint, resolve_configuration)
from sauronnet.networks.unet import build_network

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "nnunet_tiny"
CASE = "nntiny_005"


@pytest.fixture
def nn_model(tmp_path) -> Path:
    """A writable copy of the nnU-Net model folder."""
    return Path(shutil.copytree(FIXTURE / "model", tmp_path / "nnunet_model"))


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _edit_json(path: Path, edit) -> None:
    data = _json(path)
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_import_then_predict_reproduces_nnunet(tmp_path, capsys, monkeypatch, precision):
    # bf16 is refused on CPUs without native bfloat16; its numbers are the same there, only slow
    monkeypatch.setattr(sauronnet.precision, "native_bf16", lambda: True)
    out = tmp_path / "imported"
    assert cli.import_nnunet_main(["-m", str(FIXTURE / "model"), "-o", str(out)]) == 0
    assert "model:" in capsys.readouterr().out
    assert cli.predict_main(["-i", str(FIXTURE / "imagesTs"), "-o", str(tmp_path / "pred"), "-m", str(out),
                             "--save-probabilities", "--no-postprocessing", "--no-progress",
                             "--precision", precision]) == 0
    assert f"(torch {precision})" in capsys.readouterr().out
    ours = sitk.ReadImage(str(tmp_path / "pred" / f"{CASE}.nii.gz"))
    theirs = sitk.ReadImage(str(FIXTURE / "nnunet_prediction" / f"{CASE}.nii.gz"))
    assert ours.GetSize() == theirs.GetSize()
    np.testing.assert_allclose(ours.GetSpacing(), theirs.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(ours.GetOrigin(), theirs.GetOrigin(), atol=1e-9)
    a, b = sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs)
    assert (b == 1).sum() > 50 and (b == 2).sum() > 50, "the fixture model must predict every class"
    assert min(dice_per_class(a, b, (1, 2)).values()) >= 0.99
    p_ours = np.load(tmp_path / "pred" / f"{CASE}.npz")["probabilities"]
    p_theirs = np.load(FIXTURE / "nnunet_prediction" / f"{CASE}.npz")["probabilities"]
    assert p_ours.shape == p_theirs.shape
    assert np.abs(p_ours - p_theirs).max() < 0.02


def test_imported_folder_layout_and_checkpoint(tmp_path):
    result = import_nnunet_model(FIXTURE / "model", tmp_path / "m")
    assert result.folds == ("0",) and result.configuration == "3d_fullres"
    assert result.trainer_name == "nnUNetTrainer"
    assert sorted(p.name for p in (tmp_path / "m" / "nnunet_source").iterdir()) == \
        ["dataset.json", "dataset_fingerprint.json", "plans.json"]
    ckpt = torch.load(tmp_path / "m" / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert ckpt["trainer"] == "nnU-Net:nnUNetTrainer" and ckpt["mirror_axes"] == [0, 1, 2]
    # every weight came from nnU-Net's state dict, unchanged
    nn = load_nnunet_checkpoint(FIXTURE / "model" / "fold_0" / "checkpoint_final.pth")["network_weights"]
    assert torch.equal(ckpt["state_dict"]["encoder.1.0.conv.weight"], nn["encoder.stages.1.0.convs.0.conv.weight"])
    assert torch.equal(ckpt["state_dict"]["ups.0.weight"], nn["decoder.transpconvs.0.weight"])
    assert torch.equal(ckpt["state_dict"]["heads.1.bias"], nn["decoder.seg_layers.1.bias"])
    assert _json(tmp_path / "m" / "import.json")["folds"] == ["0"]


def test_converted_plans_match_nnunet_plans():
    nn_plans = _json(FIXTURE / "model" / "plans.json")
    plans = convert_plans(nn_plans, _json(FIXTURE / "model" / "dataset.json"), "3d_fullres")
    src = nn_plans["configurations"]["3d_fullres"]
    cfg = plans.configuration("3d_fullres")
    assert list(cfg.spacing) == src["spacing"] and list(cfg.patch_size) == src["patch_size"]
    assert list(cfg.network.features_per_stage) == src["architecture"]["arch_kwargs"]["features_per_stage"]
    assert list(list(s) for s in cfg.network.strides) == src["architecture"]["arch_kwargs"]["strides"]
    assert cfg.normalization_schemes == ("zscore",) and list(cfg.use_mask_for_norm) == src["use_mask_for_norm"]
    assert (cfg.resampling_data_order, cfg.resampling_seg_order, cfg.resampling_probabilities_order) == (3, 1, 1)
    assert list(plans.transpose_forward) == nn_plans["transpose_forward"]
    assert plans.preset == "nnUNetPlans" and plans.labels == {"background": 0, "lesion": 1, "vessel": 2}
    stats = nn_plans["foreground_intensity_properties_per_channel"]["0"]
    assert plans.foreground_intensity_properties_per_channel[0].percentile_99_5 == stats["percentile_99_5"]


def test_ct_normalisation_and_inherited_configuration():
    nn_plans = _json(FIXTURE / "model" / "plans.json")
    nn_plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["CTNormalization"]
    nn_plans["configurations"]["3d_big"] = {"inherits_from": "3d_fullres", "patch_size": [8, 32, 32]}
    resolved = resolve_configuration(nn_plans, "3d_big", "plans.json")
    assert resolved["patch_size"] == [8, 32, 32] and resolved["spacing"] == \
        nn_plans["configurations"]["3d_fullres"]["spacing"]
    plans = convert_plans(nn_plans, _json(FIXTURE / "model" / "dataset.json"), "3d_big")
    assert plans.configuration("3d_big").normalization_schemes == ("ct",)
    assert list(plans.configurations) == ["3d_big"]


@pytest.mark.parametrize("edit, configuration, message", [
    (lambda p, d: p["configurations"]["3d_fullres"]["architecture"].update(
        network_class_name="dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"),
     "3d_fullres", "residual-encoder"),
    (lambda p, d: p["configurations"].update(
        {"3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}}),
     "3d_cascade_fullres", "cascade"),
    (lambda p, d: d["labels"].update(lesion=[1, 2]), "3d_fullres", "region"),
    (lambda p, d: d.update(regions_class_order=[1, 2]), "3d_fullres", "regions_class_order"),
    (lambda p, d: d["labels"].update(ignore=3), "3d_fullres", "ignore"),
    (lambda p, d: p["configurations"]["3d_fullres"].update(normalization_schemes=["MyNormalization"]),
     "3d_fullres", "MyNormalization"),
    (lambda p, d: p["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(
        dropout_op="torch.nn.Dropout3d"), "3d_fullres", "dropout"),
    (lambda p, d: p["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(
        norm_op="torch.nn.BatchNorm3d"), "3d_fullres", "norm_op"),
    (lambda p, d: p["configurations"]["3d_fullres"]["resampling_fn_data_kwargs"].update(force_separate_z=True),
     "3d_fullres", "force_separate_z"),
    (lambda p, d: None, "3d_lowres", "not found"),
])
def test_unsupported_models_are_refused_with_the_reason(edit, configuration, message):
    nn_plans, dataset_json = _json(FIXTURE / "model" / "plans.json"), _json(FIXTURE / "model" / "dataset.json")
    edit(nn_plans, dataset_json)
    with pytest.raises(NnUNetImportError, match=message):
        convert_plans(nn_plans, dataset_json, configuration)


def test_refused_import_writes_nothing(nn_model, tmp_path, capsys):
    _edit_json(nn_model / "plans.json", lambda p: p["configurations"]["3d_fullres"]["architecture"].update(
        network_class_name="dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"))
    out = tmp_path / "out"
    assert cli.import_nnunet_main(["-m", str(nn_model), "-o", str(out)]) == 1
    assert "residual-encoder U-Net" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob(".out.*")) == []


def test_command_line_errors_name_the_problem(nn_model, tmp_path, capsys):
    assert cli.import_nnunet_main(["-m", str(tmp_path), "-o", str(tmp_path / "x")]) == 1
    assert "plans.json not found" in capsys.readouterr().err
    assert cli.import_nnunet_main(["-m", str(nn_model), "-o", str(tmp_path / "x"), "-f", "3"]) == 1
    assert "fold(s) ['3']" in capsys.readouterr().err
    assert cli.import_nnunet_main(["-m", str(nn_model), "-o", str(tmp_path / "x"), "--checkpoint", "best"]) == 1
    assert "checkpoint_best.pth" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    assert cli.import_nnunet_main(["-m", str(nn_model), "-o", str(tmp_path / "taken")]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli.import_nnunet_main(["-m", str(nn_model), "-o", str(tmp_path / "taken"), "--overwrite"]) == 0


def test_weights_that_do_not_match_the_plans_are_refused(nn_model, tmp_path):
    _edit_json(nn_model / "plans.json", lambda p: p["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
               .update(features_per_stage=[8, 16, 32]))
    with pytest.raises(NnUNetImportError, match="has shape"):
        import_nnunet_model(nn_model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_conv_bias_false_gives_zero_biases():
    nn_plans, dataset_json = _json(FIXTURE / "model" / "plans.json"), _json(FIXTURE / "model" / "dataset.json")
    cfg = convert_plans(nn_plans, dataset_json, "3d_fullres").configuration("3d_fullres")
    template = build_network(cfg.network, 1, 3).state_dict()
    weights = load_nnunet_checkpoint(FIXTURE / "model" / "fold_0" / "checkpoint_final.pth")["network_weights"]
    no_bias = {k: v for k, v in weights.items()
               if not (k.endswith("conv.bias") or (k.startswith("decoder.transpconvs") and k.endswith("bias")))}
    with pytest.raises(NnUNetImportError, match="missing"):
        convert_state_dict(no_bias, template, conv_bias=True)
    state = convert_state_dict(no_bias, template, conv_bias=False)
    assert not state["encoder.0.0.conv.bias"].any() and not state["ups.0.bias"].any()
    assert torch.equal(state["heads.0.bias"], weights["decoder.seg_layers.0.bias"])


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_checkpoints_with_code_are_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    evil = _RunsCode()
    evil.target = str(marker)
    ckpt = torch.load(FIXTURE / "model" / "fold_0" / "checkpoint_final.pth", weights_only=False)
    ckpt["logging"]["evil"] = evil
    torch.save(ckpt, tmp_path / "checkpoint_final.pth")
    with pytest.raises(NnUNetImportError, match="not loaded"):
        load_nnunet_checkpoint(tmp_path / "checkpoint_final.pth")
    assert not marker.exists()


def test_allowed_mirroring_axes_are_kept(nn_model, tmp_path):
    path = nn_model / "fold_0" / "checkpoint_final.pth"
    ckpt = load_nnunet_checkpoint(path)
    ckpt["inference_allowed_mirroring_axes"] = None  # e.g. nnUNetTrainerNoMirroring
    torch.save(ckpt, path)
    import_nnunet_model(nn_model, tmp_path / "m")
    assert Predictor.from_model_dir(tmp_path / "m").mirror_axes == ()
    assert Predictor.from_model_dir(tmp_path / "m", mirror=False).mirror_axes == ()
    ckpt["inference_allowed_mirroring_axes"] = (1, 2)
    torch.save(ckpt, path)
    import_nnunet_model(nn_model, tmp_path / "m", overwrite=True)
    assert Predictor.from_model_dir(tmp_path / "m").mirror_axes == (1, 2)
