"""Every command given bad input: exit status != 0, an ``error:`` line naming the file or flag and the fix, no
traceback, and nothing new on disk (issue 14). One table; each row breaks one thing of a valid setup.

A row is ``(name, command, break_it)``: ``break_it(env)`` damages the fresh copy of a valid setup in ``env`` and
returns ``(argv, expected)``: the command's arguments and the text the error line must contain.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sauronnet import cli
from tests.conftest import write_image
from tests.reliability.conftest import NNUNET_MODEL, Env


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


# ---- ways to break things ---------------------------------------------------------------------------------------
def _tiny_image(env: Env, case="c01", channel=0) -> Path:
    return env.tiny / "imagesTr" / f"{case}_{channel:04d}.nii.gz"


def _tiny_label(env: Env, case="c01") -> Path:
    return env.tiny / "labelsTr" / f"{case}.nii.gz"


PLAN = ["-d", "5", "--preset", "cpu", "--no-progress", "-np", "1"]


def _plan(env, expected):
    return PLAN, expected


def missing_channel(env):
    _tiny_image(env).unlink()
    return _plan(env, "c01_0000.nii.gz")


def _label_geometry(**kw):
    def f(env):
        shape = kw.pop("shape", (8, 12, 12))
        seg = np.zeros(shape, np.uint8)
        write_image(_tiny_label(env), seg, **{"spacing": (1.0, 1.0, 2.0), **kw})
        return _plan(env, "c01.nii.gz")
    return f


def undeclared_label(env):
    seg = np.zeros((8, 12, 12), np.uint8)
    seg[0, 0, 0] = 5
    write_image(_tiny_label(env), seg, spacing=(1.0, 1.0, 2.0))
    return _plan(env, "c01.nii.gz: label value(s) [5]")


def non_integer_label(env):
    write_image(_tiny_label(env), np.full((8, 12, 12), 0.5, np.float32), spacing=(1.0, 1.0, 2.0))
    return _plan(env, "c01.nii.gz: label map holds non-integer values")


def _bad_voxels(value):
    def f(env):
        img = np.full((8, 12, 12), 100, np.float32)
        img[1, 2, 3] = value
        write_image(_tiny_image(env), img, spacing=(1.0, 1.0, 2.0))
        return _plan(env, "c01_0000.nii.gz: 1 NaN/inf voxel(s)")
    return f


def image_2d(env):
    write_image(_tiny_image(env), np.ones((12, 12), np.float32), spacing=(1.0, 2.0), direction=(1, 0, 0, 1))
    return _plan(env, "c01")


def image_4d(env):
    import SimpleITK as sitk
    img = sitk.JoinSeries([sitk.GetImageFromArray(np.ones((8, 12, 12), np.float32))] * 2)
    sitk.WriteImage(img, str(_tiny_image(env)))
    return _plan(env, "c01_0000.nii.gz")


def truncated_image(env):
    p = _tiny_image(env)
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 2])
    return _plan(env, "c01_0000.nii.gz")


def truncated_uncompressed(env):
    import SimpleITK as sitk
    spec = json.loads((env.tiny / "dataset.json").read_text())
    spec["file_ending"] = ".nii"
    (env.tiny / "dataset.json").write_text(json.dumps(spec))
    for p in sorted(env.tiny.rglob("*.nii.gz")):
        sitk.WriteImage(sitk.ReadImage(str(p)), str(p.with_suffix("")))
        p.unlink()
    p = _tiny_image(env).with_suffix("")
    p.write_bytes(p.read_bytes()[:-200])
    return _plan(env, "c01_0000.nii")


def zero_byte_file(env):
    _tiny_image(env).write_bytes(b"")
    return _plan(env, "c01_0000.nii.gz")


def _dataset_json(edit, expected):
    def f(env):
        path = env.tiny / "dataset.json"
        spec = json.loads(path.read_text())
        text = edit(spec)
        path.write_text(text if isinstance(text, str) else json.dumps(spec))
        return _plan(env, expected)
    return f


def _del(key):
    def f(spec):
        del spec[key]
    return f


def _set(key, value):
    def f(spec):
        spec[key] = value
    return f


def case_ids_differ_by_letter_case(env):
    for p in (_tiny_image(env), _tiny_label(env)):
        p.rename(p.with_name(p.name.replace("c01", "C00")))
    return _plan(env, "C00")


def num_training_disagrees(env):
    _tiny_image(env).unlink()
    _tiny_label(env).unlink()
    return _plan(env, "numTraining is 5 but imagesTr holds 4")


def splits_name_unknown_cases(env):
    (env.tiny / "splits_final.json").write_text(json.dumps([{"train": ["c00", "../../x"], "val": ["c01"]}] * 5))
    return _plan(env, "splits_final.json")


# sauron_train -----------------------------------------------------------------------------------------------------
TRAIN = ["1", "0", "-tr", "Trainer", "--epochs", "1", "--iters", "1", "--val-iters", "1", "--workers", "0",
         "--no-progress"]


def fold_out_of_range(env):
    return ["1", "7"], "FOLD must be 0-4"


def splits_unknown_in_training(env):
    path = env.paths.preprocessed / "Dataset001_Demo" / "splits_final.json"
    splits = json.loads(path.read_text())
    splits[0]["train"].append("../../../etc/passwd")
    path.write_text(json.dumps(splits))
    return TRAIN, "splits_final.json"


def train_before_preprocessing(env):
    shutil.rmtree(env.paths.preprocessed / "Dataset001_Demo" / "cpu" / "3d_fullres")
    return TRAIN, "run sauron_plan_and_preprocess"


def corrupt_preprocessed_array(env):
    folder = env.paths.preprocessed / "Dataset001_Demo" / "cpu" / "3d_fullres"
    p = sorted(folder.glob("*_seg.npy"))[0]
    p.write_bytes(p.read_bytes()[:200])
    return TRAIN, p.name


def _fold_checkpoint_for_continue(env) -> Path:
    target = env.paths.results / "Dataset001_Demo" / "Trainer__cpu__3d_fullres" / "fold_0"
    target.mkdir(parents=True)
    return target / "checkpoint_latest.pth"


def truncated_checkpoint_on_continue(env):
    ckpt = _fold_checkpoint_for_continue(env)
    data = (env.fold() / "checkpoint_final.pth").read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])
    return TRAIN + ["--continue"], "checkpoint_latest.pth"


def garbage_checkpoint_on_continue(env):
    _fold_checkpoint_for_continue(env).write_bytes(b"not a checkpoint at all")
    return TRAIN + ["--continue"], "checkpoint_latest.pth"


def _plans_edit(edit, expected):
    def f(env):
        path = env.paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json"
        plans = json.loads(path.read_text())
        edit(plans["configurations"]["3d_fullres"])
        path.write_text(json.dumps(plans))
        return TRAIN, expected
    return f


def existing_trained_fold(env):
    (env.paths.results / "Dataset001_Demo" / "Trainer__cpu__3d_fullres").mkdir(parents=True)
    shutil.copytree(env.fold(), env.paths.results / "Dataset001_Demo" / "Trainer__cpu__3d_fullres" / "fold_0")
    return TRAIN, "--overwrite"


# sauron_predict ---------------------------------------------------------------------------------------------------
def _predict(env, extra=()):
    return ["-i", str(env.images), "-o", str(env.out), "-m", str(env.model), "--disable-tta", "--no-progress",
            *extra]


def truncated_checkpoint_on_predict(env):
    p = env.fold() / "checkpoint_final.pth"
    p.write_bytes(p.read_bytes()[:1000])
    return _predict(env), "checkpoint_final.pth"


def _single_case(env) -> Path:
    """Leaves one case in the input folder (the others would be predicted: a bad case never stops the rest)."""
    first, *others = sorted(env.images.glob("*.nii.gz"))
    for other in others:
        other.unlink()
    return first


def extra_channel_files(env):
    first = _single_case(env)
    shutil.copyfile(first, first.with_name(first.name.replace("_0000", "_0001")))
    return _predict(env), "_0001"


def no_input_files(env):
    empty = env.root / "empty"
    empty.mkdir()
    return ["-i", str(empty), "-o", str(env.out), "-m", str(env.model), "--no-progress"], str(empty)


def output_equals_input(env):
    return ["-i", str(env.images), "-o", str(env.images), "-m", str(env.model), "--no-progress"], "-o"


def truncated_prediction_input(env):
    p = _single_case(env)
    p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
    return _predict(env), p.name


def nan_prediction_input(env):
    import SimpleITK as sitk
    p = _single_case(env)
    img = sitk.ReadImage(str(p))
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr[0, 0, 0] = np.nan
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(p))
    return _predict(env), p.name


def bad_fold_name(env):
    return _predict(env, ["-f", "../../x"]), "-f"


# sauron_import_nnunet -----------------------------------------------------------------------------------------------
def _import(env, model):
    return ["-m", str(model), "-o", str(env.out)]


def import_not_a_model(env):
    folder = env.root / "notamodel"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    return _import(env, folder), "notamodel"


def import_resenc(env):
    model = env.root / "resenc"
    shutil.copytree(NNUNET_MODEL, model)
    plans = json.loads((model / "plans.json").read_text())
    for c in plans["configurations"].values():
        if "architecture" in c:
            c["architecture"]["network_class_name"] = \
                "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    (model / "plans.json").write_text(json.dumps(plans))
    return _import(env, model), "residual-encoder"


def import_truncated_checkpoint(env):
    model = env.root / "truncated"
    shutil.copytree(NNUNET_MODEL, model)
    p = model / "fold_0" / "checkpoint_final.pth"
    p.write_bytes(p.read_bytes()[:2000])
    return _import(env, model), "checkpoint_final.pth"


# sauron_evaluate -------------------------------------------------------------------------------------------------
def evaluate_shape_mismatch(env):
    pred = env.root / "pred"
    pred.mkdir()
    for ref in sorted(env.labels.glob("*.nii.gz")):
        write_image(pred / ref.name, np.zeros((3, 4, 5), np.uint8))
    return ["-ref", str(env.labels), "-pred", str(pred)], "shape"


def evaluate_missing_prediction(env):
    pred = env.root / "pred"
    pred.mkdir()
    return ["-ref", str(env.labels), "-pred", str(pred)], "pred"


# sauron_export / sauron_inspect -------------------------------------------------------------------------------------
def export_without_suffix(env):
    return [str(env.model), "-o", str(env.out / "model.zip")], ".sauron"


def export_truncated_checkpoint(env):
    p = env.fold() / "checkpoint_final.pth"
    p.write_bytes(p.read_bytes()[:1000])
    return [str(env.model), "-o", str(env.out / "model.sauron")], "checkpoint_final.pth"


def inspect_unknown_layer(env):
    image = sorted(env.images.glob("*.nii.gz"))[0]
    return [str(env.model), "-i", str(image), "-o", str(env.out), "--layers", "enc9.9"], "enc9.9"


def inspect_missing_image(env):
    return [str(env.model), "-i", str(env.root / "nope.nii.gz"), "-o", str(env.out)], "nope.nii.gz"


CASES = [
    ("plan: missing channel file", "plan", missing_channel),
    ("plan: label size differs", "plan", _label_geometry(shape=(8, 12, 11))),
    ("plan: label spacing differs", "plan", _label_geometry(spacing=(1.0, 1.0, 2.5))),
    ("plan: label origin differs", "plan", _label_geometry(origin=(0.0, 5.0, 0.0))),
    ("plan: label direction differs", "plan", _label_geometry(direction=(0, 1, 0, 1, 0, 0, 0, 0, 1))),
    ("plan: undeclared label value", "plan", undeclared_label),
    ("plan: non-integer label values", "plan", non_integer_label),
    ("plan: NaN voxel", "plan", _bad_voxels(np.nan)),
    ("plan: inf voxel", "plan", _bad_voxels(np.inf)),
    ("plan: 2D file in a 3D task", "plan", image_2d),
    ("plan: 4D file", "plan", image_4d),
    ("plan: truncated .nii.gz", "plan", truncated_image),
    ("plan: truncated .nii", "plan", truncated_uncompressed),
    ("plan: zero-byte file", "plan", zero_byte_file),
    ("plan: dataset.json missing a key", "plan", _dataset_json(_del("labels"), "missing key(s) ['labels']")),
    ("plan: dataset.json wrong type", "plan", _dataset_json(_set("numTraining", "5"), "numTraining")),
    ("plan: dataset.json invalid JSON", "plan", _dataset_json(lambda s: "{not json", "dataset.json")),
    ("plan: case ids differ only in letter case", "plan", case_ids_differ_by_letter_case),
    ("plan: numTraining disagrees with the files", "plan", num_training_disagrees),
    ("plan: splits_final.json names unknown cases", "plan", splits_name_unknown_cases),
    ("train: fold out of range", "train", fold_out_of_range),
    ("train: splits_final.json names unknown cases", "train", splits_unknown_in_training),
    ("train: before preprocessing", "train", train_before_preprocessing),
    ("train: corrupt preprocessed array", "train", corrupt_preprocessed_array),
    ("train: truncated checkpoint on --continue", "train", truncated_checkpoint_on_continue),
    ("train: garbage checkpoint on --continue", "train", garbage_checkpoint_on_continue),
    ("train: plans.json unknown key", "train", _plans_edit(lambda c: c.update(surprise=1), "surprise")),
    ("train: plans.json zero spacing", "train", _plans_edit(lambda c: c.update(spacing=[0.0, 1.0, 1.0]), "spacing")),
    ("train: plans.json zero patch size", "train", _plans_edit(lambda c: c.update(patch_size=[0, 32, 32]),
                                                                "patch_size")),
    ("train: a trained fold exists", "train", existing_trained_fold),
    ("predict: truncated checkpoint", "predict", truncated_checkpoint_on_predict),
    ("predict: extra channel files", "predict", extra_channel_files),
    ("predict: no input files", "predict", no_input_files),
    ("predict: output folder is the input folder", "predict", output_equals_input),
    ("predict: truncated input image", "predict", truncated_prediction_input),
    ("predict: NaN voxel in the input", "predict", nan_prediction_input),
    ("predict: fold name leaves the model folder", "predict", bad_fold_name),
    ("import: not an nnU-Net model", "import", import_not_a_model),
    ("import: ResEnc model", "import", import_resenc),
    ("import: truncated nnU-Net checkpoint", "import", import_truncated_checkpoint),
    ("evaluate: shapes differ", "evaluate", evaluate_shape_mismatch),
    ("evaluate: no predictions", "evaluate", evaluate_missing_prediction),
    ("export: output without .sauron", "export", export_without_suffix),
    ("export: truncated checkpoint", "export", export_truncated_checkpoint),
    ("inspect: unknown layer", "inspect", inspect_unknown_layer),
    ("inspect: missing image", "inspect", inspect_missing_image),
]

COMMANDS = {"plan": cli.plan_and_preprocess_main, "train": cli.train_main, "predict": cli.predict_main,
            "import": cli.import_nnunet_main, "evaluate": cli.evaluate_main, "export": cli.export_main,
            "inspect": cli.inspect_main}


@pytest.mark.parametrize("name,command,break_it", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_cleanly(env, capsys, name, command, break_it):
    argv, expected = break_it(env)
    before = _snapshot(env.root)
    capsys.readouterr()
    try:
        status = COMMANDS[command](argv)
    except SystemExit as e:  # argparse usage errors
        status = e.code
    err = capsys.readouterr().err
    assert status not in (0, None), f"{name}: accepted"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors, err
    assert any(expected in line for line in errors), f"{name}: no error line names {expected!r}:\n{err}"
    after = _snapshot(env.root)
    assert after == before, f"{name}: files changed: {sorted(set(after.items()) ^ set(before.items()))}"


def test_the_table_covers_every_command_and_thirty_cases():
    assert len(CASES) >= 30
    assert {c[1] for c in CASES} == set(COMMANDS)

