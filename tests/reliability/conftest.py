"""The valid setup each reliability test breaks or attacks: fresh copies of a tiny raw dataset, the small demo
(raw, preprocessed) and a briefly trained model."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from sauronnet.paths import Paths
from tests.conftest import make_raw_dataset, point_env

ROOT = Path(__file__).resolve().parents[2]
NNUNET_MODEL = ROOT / "tests" / "fixtures" / "nnunet_tiny" / "model"
TINY = "Dataset005_Tiny"


@dataclass
class Env:
    """A valid setup in a temporary folder: a tiny raw dataset, the small demo preprocessed, a trained model."""

    root: Path
    paths: Paths  # the small demo's (raw, preprocessed, results); results hold the trained model
    tiny: Path  # the tiny raw dataset folder (for sauron_plan_and_preprocess)
    model: Path  # the trained model folder (fold 0)
    images: Path  # the small demo's imagesTs
    labels: Path  # the small demo's labelsTs

    @property
    def out(self) -> Path:
        return self.root / "out"

    def fold(self) -> Path:
        return self.model / "fold_0"


@pytest.fixture
def env(pruned_model, tmp_path, monkeypatch) -> Env:
    paths, trainer = pruned_model
    root = tmp_path
    raw = root / "raw"
    shutil.copytree(paths.raw / "Dataset001_Demo", raw / "Dataset001_Demo")
    make_raw_dataset(raw)
    pre = root / "preprocessed"
    shutil.copytree(paths.preprocessed / "Dataset001_Demo", pre / "Dataset001_Demo")
    results = root / "results"
    model = results / "Dataset001_Demo" / trainer.output_dir.parent.name
    shutil.copytree(trainer.output_dir.parent, model)
    mine = Paths(raw, pre, results)
    point_env(mine, monkeypatch)
    return Env(root, mine, raw / TINY, model, raw / "Dataset001_Demo" / "imagesTs",
               raw / "Dataset001_Demo" / "labelsTs")
