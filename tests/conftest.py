"""Shared fixtures: small seeded synthetic datasets in nnU-Net v2 raw layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sauronnet.demo import DemoSpec, write_demo_dataset

#: A small demo variant: fast to write and to preprocess, same structure as the real demo.
SMALL_DEMO = DemoSpec(n_train=6, n_test=2, size_xyz=(40, 40, 16), size_jitter=2)


@pytest.fixture(scope="session")
def small_demo_raw(tmp_path_factory) -> Path:
    """A read-only small demo dataset (copy it before modifying)."""
    return write_demo_dataset(tmp_path_factory.mktemp("raw"), SMALL_DEMO)


def env_of(paths) -> dict[str, str]:
    """The environment variables that make the commands use ``paths`` (a :class:`sauronnet.paths.Paths`)."""
    return {"SAURON_RAW": str(paths.raw), "SAURON_PREPROCESSED": str(paths.preprocessed),
            "SAURON_RESULTS": str(paths.results)}


def point_env(paths, monkeypatch) -> None:
    """Points the commands run in-process at ``paths``."""
    for k, v in env_of(paths).items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def data_roots(tmp_path, monkeypatch):
    """Points SAURON_RAW / SAURON_PREPROCESSED / SAURON_RESULTS into tmp_path; returns the three paths."""
    from sauronnet.paths import Paths
    paths = Paths(tmp_path / "raw", tmp_path / "preprocessed", tmp_path / "results")
    point_env(paths, monkeypatch)
    return paths.raw, paths.preprocessed, paths.results


def write_image(path: Path, arr: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> None:
    """Writes ``arr`` (z, y, x) with an ITK-order header."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection([float(d) for d in direction])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def make_raw_dataset(root: Path, name: str = "Dataset005_Tiny", n_cases: int = 5, shape=(8, 12, 12),
                     channels=("MR",), seed: int = 0, file_ending: str = ".nii.gz") -> Path:
    """A tiny valid dataset: a bright cube labelled 1 inside a noisy body labelled 0."""
    rng = np.random.RandomState(seed)
    folder = root / name
    for i in range(n_cases):
        seg = np.zeros(shape, np.uint8)
        seg[2:5, 3:8, 4:9] = 1
        for c in range(len(channels)):
            img = (rng.normal(100, 10, shape) + 50 * seg).astype(np.float32)
            write_image(folder / "imagesTr" / f"c{i:02d}_{c:04d}{file_ending}", img, spacing=(1.0, 1.0, 2.0))
        write_image(folder / "labelsTr" / f"c{i:02d}{file_ending}", seg, spacing=(1.0, 1.0, 2.0))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": {"background": 0, "thing": 1},
        "numTraining": n_cases, "file_ending": file_ending}))
    return folder


@pytest.fixture(scope="session")
def small_demo_paths(tmp_path_factory, small_demo_raw):
    """Paths whose preprocessed root holds the small demo planned and preprocessed with the cpu preset.

    Results go to a fresh folder per test via :func:`results_paths`.
    """
    from sauronnet.paths import Paths
    from sauronnet.pipeline import plan_and_preprocess

    root = tmp_path_factory.mktemp("prep")
    paths = Paths(small_demo_raw.parent, root / "preprocessed", root / "results")
    plan_and_preprocess(paths, small_demo_raw.name, "cpu", ("3d_fullres", "2d"), progress=False)
    return paths


@pytest.fixture
def results_paths(small_demo_paths, tmp_path):
    """The small demo's paths with a results root of this test's own."""
    from sauronnet.paths import Paths
    return Paths(small_demo_paths.raw, small_demo_paths.preprocessed, tmp_path / "results")


@pytest.fixture(scope="session")
def pruned_model(small_demo_paths, tmp_path_factory):
    """(paths, trainer): the small demo's fold 0 trained briefly by the Sauron trainer with pruning forced early
    (a high first threshold), shared by the prediction and deployment tests."""
    from sauronnet.paths import Paths
    from sauronnet.plans import Plans
    from trainers.sauron import SauronConfig, SauronTrainer

    fast = SauronConfig(epochs=3, iterations_per_epoch=4, val_iterations=1, num_workers=0, seed=5, tau0=0.2,
                        tau_max=0.4, kappa=1, rho=1)
    paths = Paths(small_demo_paths.raw, small_demo_paths.preprocessed, tmp_path_factory.mktemp("pruned"))
    plans = Plans.load(paths.preprocessed / "Dataset001_Demo" / "cpu" / "plans.json")
    trainer = SauronTrainer(plans, "3d_fullres", "0", paths, fast, "cpu")
    trainer.fit(progress=False)
    return paths, trainer
