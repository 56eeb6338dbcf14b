"""Side by side with nnU-Net v2 itself (skipped unless ``nnunetv2`` is importable, e.g. in ``.bench-venv``).

nnU-Net plans a synthetic dataset and trains its own PlainConvUNet for a few iterations; the model is imported and
the same test images are predicted by ``nnUNetv2_predict`` and ``sauron_predict`` (same fold, same TTA setting,
same step). The segmentations must agree to Dice ≥ 0.99 per class. Run with ``make bench-test``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

nnunetv2 = pytest.importorskip("nnunetv2")

from benchmarks.common import build_nnunet_model, compare_predictions, nnunet_env, run_measured  # noqa: E402
from sauronnet import cli  # noqa: E402
from sauronnet.demo import DemoSpec, write_demo_dataset  # noqa: E402

SPEC = DemoSpec(dataset_id=93, name="Peer", n_train=6, n_test=2, size_xyz=(40, 40, 16), size_jitter=2, seed=5)


@pytest.fixture(scope="module")
def nnunet_model(tmp_path_factory) -> tuple[Path, Path]:
    """(work folder with raw/ and nnU-Net's roots, the nnU-Net model folder), trained once for both tests."""
    root = tmp_path_factory.mktemp("peer")
    write_demo_dataset(root / "raw", SPEC)
    model = build_nnunet_model(root, SPEC.dataset_id, "3d_fullres", "0", iters=30,
                               bin_dir=Path(sys.executable).parent)
    return root, model


@pytest.mark.parametrize("tta", [True, False], ids=["tta", "no-tta"])
def test_sauron_predict_agrees_with_nnunet_predict_on_an_imported_model(nnunet_model, tmp_path, tta, capsys):
    root, model = nnunet_model
    raw = root / "raw" / SPEC.folder_name
    flags = [] if tta else ["--disable_tta"]
    run_measured([Path(sys.executable).parent / "nnUNetv2_predict", "-i", raw / "imagesTs", "-o", tmp_path / "nnunet",
                  "-d", str(SPEC.dataset_id), "-c", "3d_fullres", "-f", "0", "-step_size", "0.5",
                  "--save_probabilities", "-device", "cpu", "-npp", "1", "-nps", "1", *flags], nnunet_env(root))
    assert cli.import_nnunet_main(["-m", str(model), "-o", str(tmp_path / "imported")]) == 0
    assert cli.predict_main(["-i", str(raw / "imagesTs"), "-o", str(tmp_path / "sauron"), "-m",
                             str(tmp_path / "imported"), "-f", "0", "--step", "0.5", "--save-probabilities",
                             "--no-postprocessing", "--no-progress"] + (["--disable-tta"] if not tta else [])) == 0
    agreement = compare_predictions(tmp_path / "sauron", tmp_path / "nnunet", [1, 2])
    with capsys.disabled():
        print(f"\n[{'TTA' if tta else 'no TTA'}] {agreement}")
    assert agreement["cases"] == SPEC.n_test
    assert min(agreement["dice"].values()) >= 0.99
    assert agreement["prob_max_abs_diff"] < 0.05
