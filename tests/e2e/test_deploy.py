"""sauron_export → one .sauron file → sauron_predict with torch and with onnxruntime (and without torch at all)."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sauronnet import cli
from sauronnet.deploy.bundle import read_bundle
from sauronnet.evaluation import dice_per_class
from sauronnet.inference.torch_network import load_fold_network
from sauronnet.networks.unet import default_widths

ROOT = Path(__file__).resolve().parents[2]
NNUNET = ROOT / "tests" / "fixtures" / "nnunet_tiny"


@pytest.fixture(scope="module")
def exported(pruned_model, tmp_path_factory):
    """A Sauron-pruned model folder and its bundle with ONNX graphs."""
    paths, trainer = pruned_model
    model_dir = trainer.output_dir.parent
    bundle = tmp_path_factory.mktemp("bundle") / "demo.sauron"
    assert cli.export_main([str(model_dir), "-o", str(bundle), "--onnx"]) == 0
    return paths, model_dir, bundle


def _run(paths, model, out, *extra) -> int:
    return cli.predict_main(["-i", str(paths.raw / "Dataset001_Demo" / "imagesTs"), "-o", str(out), "-m",
                             str(model), "--no-progress", "--save-probabilities", "--disable-tta", *extra])


def _outputs(folder):
    names = sorted(p.name[:-7] for p in Path(folder).glob("*.nii.gz"))
    assert names
    return {n: (sitk.GetArrayFromImage(sitk.ReadImage(str(Path(folder) / f"{n}.nii.gz"))),
                np.load(Path(folder) / f"{n}.npz")["probabilities"]) for n in names}


def test_bundle_holds_the_pruned_model_and_little_else(exported):
    _, model_dir, bundle = exported
    b = read_bundle(bundle)
    ckpt_net, plans, _ = load_fold_network(model_dir / "fold_0" / "checkpoint_final.pth", torch.device("cpu"))
    assert b.plans == plans and b.folds[0].widths == ckpt_net.widths()
    for k, v in ckpt_net.state_dict().items():
        assert np.array_equal(b.folds[0].weights[k], v.numpy())
    tensors = sum(a.nbytes for a in b.folds[0].weights.values()) + len(b.folds[0].onnx)
    assert bundle.stat().st_size <= 1.1 * tensors


def test_onnx_graph_of_the_pruned_network_matches_torch(exported):
    import onnxruntime as ort
    _, model_dir, bundle = exported
    net, plans, configuration = load_fold_network(model_dir / "fold_0" / "checkpoint_final.pth", torch.device("cpu"))
    assert sum(net.widths().values()) < sum(default_widths(net.plan).values()), "the fixture must be pruned"
    x = torch.randn(2, 1, *plans.configuration(configuration).patch_size, generator=torch.Generator().manual_seed(7))
    session = ort.InferenceSession(read_bundle(bundle).folds[0].onnx, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = net(x).numpy()
    assert np.abs(session.run(None, {"image": x.numpy()})[0] - ref).max() < 1e-4


def test_the_bundle_predicts_exactly_like_the_model_folder(exported, tmp_path):
    paths, model_dir, bundle = exported
    assert _run(paths, model_dir, tmp_path / "dir", "--backend", "torch") == 0
    assert _run(paths, bundle, tmp_path / "bundle", "--backend", "torch") == 0
    a, b = _outputs(tmp_path / "dir"), _outputs(tmp_path / "bundle")
    for case in a:
        assert np.array_equal(a[case][0], b[case][0]) and np.array_equal(a[case][1], b[case][1])


def test_onnxruntime_agrees_with_torch(exported, tmp_path, capsys):
    paths, _, bundle = exported
    # onnxruntime runs fp32; torch too here, also on a CPU where auto would pick bf16
    assert _run(paths, bundle, tmp_path / "torch", "--backend", "torch", "--precision", "fp32") == 0
    assert _run(paths, bundle, tmp_path / "ort", "--backend", "onnxruntime") == 0
    assert "(onnxruntime)" in capsys.readouterr().out
    a, b = _outputs(tmp_path / "torch"), _outputs(tmp_path / "ort")
    equal = sum(int((a[c][0] == b[c][0]).sum()) for c in a) / sum(a[c][0].size for c in a)
    assert equal >= 0.9999
    assert max(np.abs(a[c][1] - b[c][1]).max() for c in a) < 1e-4


def test_auto_picks_torch_where_it_is_installed(exported, tmp_path, capsys):
    paths, _, bundle = exported
    assert _run(paths, bundle, tmp_path / "a", "--precision", "fp32") == 0
    assert "(torch fp32)" in capsys.readouterr().out


def test_a_damaged_bundle_predicts_nothing(exported, tmp_path, capsys):
    paths, _, bundle = exported
    bad = tmp_path / "bad.sauron"
    with zipfile.ZipFile(bundle) as a, zipfile.ZipFile(bad, "w") as b:
        for name in a.namelist():
            data = a.read(name)
            b.writestr(name, data[:-8] + b"\0" * 8 if name.endswith(".onnx") else data)
    for backend in ("torch", "onnxruntime"):
        assert _run(paths, bad, tmp_path / backend, "--backend", backend) == 1
        assert "does not match its sha256" in capsys.readouterr().err
        assert not (tmp_path / backend).exists()


def test_export_refuses_to_overwrite_and_needs_the_suffix(exported, tmp_path, capsys):
    _, model_dir, bundle = exported
    assert cli.export_main([str(model_dir), "-o", str(bundle)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.export_main([str(model_dir), "-o", str(tmp_path / "m.zip")])
    assert cli.predict_main(["-i", str(tmp_path), "-o", str(tmp_path / "o"), "-m", str(model_dir), "--backend",
                             "onnxruntime"]) == 1
    assert "sauron_export" in capsys.readouterr().err


def test_the_onnxruntime_path_never_imports_torch(exported, tmp_path):
    paths, _, bundle = exported
    code = ("import sys; from sauronnet.cli import predict_main; "
            f"rc = predict_main(['-i', {str(paths.raw / 'Dataset001_Demo' / 'imagesTs')!r}, '-o', "
            f"{str(tmp_path / 'out')!r}, '-m', {str(bundle)!r}, '--backend', 'onnxruntime', '--no-progress', "
            "'--disable-tta']); assert rc == 0, rc; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'trainers', 'batchgenerators')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)
    assert list((tmp_path / "out").glob("*.nii.gz"))


def test_an_imported_nnunet_model_predicts_through_onnxruntime_like_nnunet(tmp_path):
    case = "nntiny_005"
    assert cli.import_nnunet_main(["-m", str(NNUNET / "model"), "-o", str(tmp_path / "imported")]) == 0
    assert cli.export_main([str(tmp_path / "imported"), "-o", str(tmp_path / "nn.sauron"), "--onnx"]) == 0
    assert cli.predict_main(["-i", str(NNUNET / "imagesTs"), "-o", str(tmp_path / "pred"), "-m",
                             str(tmp_path / "nn.sauron"), "--backend", "onnxruntime", "--save-probabilities",
                             "--no-postprocessing", "--no-progress"]) == 0
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / f"{case}.nii.gz")))
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(NNUNET / "nnunet_prediction" / f"{case}.nii.gz")))
    assert min(dice_per_class(ours, theirs, (1, 2)).values()) >= 0.99
    p_ours = np.load(tmp_path / "pred" / f"{case}.npz")["probabilities"]
    p_theirs = np.load(NNUNET / "nnunet_prediction" / f"{case}.npz")["probabilities"]
    assert np.abs(p_ours - p_theirs).max() < 0.02


def test_a_venv_without_torch_predicts_with_the_deploy_extra(exported, tmp_path):
    """The deploy install as a hospital workstation gets it: a fresh venv, `pip install sauronnet[deploy]`."""
    paths, _, bundle = exported
    venv = tmp_path / "deploy-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{ROOT}[deploy]"],
                         capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        pytest.skip(f"could not install the deploy extra here (no package index?): {pip.stderr[-500:]}")
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True).returncode != 0
    out = tmp_path / "out"
    run = subprocess.run([str(venv / "bin" / "sauron_predict"), "-i", str(paths.raw / "Dataset001_Demo" / "imagesTs"),
                          "-o", str(out), "-m", str(bundle), "--no-progress", "--disable-tta"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(onnxruntime)" in run.stdout  # auto picks onnxruntime where torch is missing
    assert len(list(out.glob("*.nii.gz"))) == len(list((paths.raw / "Dataset001_Demo" / "imagesTs").iterdir()))
    train = subprocess.run([str(venv / "bin" / "sauron_train"), "1", "0"], capture_output=True, text=True)
    assert train.returncode == 1 and "pip install 'sauronnet[train]'" in train.stderr
