"""kill -9 at random moments of plan+preprocess, training, prediction and import (issue 14).

For each command: one uninterrupted reference run; then, per kill, a fresh copy of its inputs, the command
started in a subprocess and SIGKILLed after a seeded random delay within the reference's duration, every file it
left checked (each array, JSON, checkpoint and image loads), and the same command run again (``--continue`` where
it exists) to completion, whose outputs must equal the reference's. ``make test`` kills each command
``SAURON_KILLS`` times (default 1); ``make reliability`` sets 20 and prints the tally.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sauronnet.atomic import exclusive_lock
from sauronnet.checkpoint import load_checkpoint
from sauronnet.io import read_image
from tests.conftest import make_raw_dataset

ROOT = Path(__file__).resolve().parents[2]
NNUNET_MODEL = ROOT / "tests" / "fixtures" / "nnunet_tiny" / "model"
KILLS = int(os.environ.get("SAURON_KILLS", "1"))
TALLY: dict[str, list[int]] = {}

TRAIN = ["5", "0", "-tr", "Trainer", "-p", "cpu", "--epochs", "4", "--iters", "2", "--val-iters", "1",
         "--workers", "0", "--no-progress", "--threads", "1"]


def _run(world: Path, fn: str, argv: list[str], wait: bool = True):
    code = f"import sys; from sauronnet.cli import {fn}; sys.exit({fn}({argv!r}))"
    env = {**os.environ, "SAURON_RAW": str(world / "raw"), "SAURON_PREPROCESSED": str(world / "preprocessed"),
           "SAURON_RESULTS": str(world / "results"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    return proc


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _loads(path: Path) -> None:
    """Every final file a command writes must load."""
    name = path.name
    if name.endswith(".npy"):
        np.load(path)
    elif name.endswith(".npz"):
        dict(np.load(path))
    elif name.endswith((".json", ".jsonl")):
        for line in ([path.read_text()] if name.endswith(".json") else path.read_text().splitlines()):
            json.loads(line)
    elif name.endswith(".pth"):
        if "checkpoint" in name:
            load_checkpoint(path)
    elif name.endswith(".nii.gz"):
        read_image(path)


def _digest(folder: Path, kind: str) -> dict:
    """What must be identical to the uninterrupted run."""
    out = {}
    for p in _files(folder):
        rel = str(p.relative_to(folder))
        if p.name.endswith((".log", ".png", ".jsonl")) or p.name in ("summary.json", "pruning_summary.json",
                                                                     "import.json"):
            continue  # timings, plots, an import's timestamp
        if p.name.endswith(".pth"):
            if p.name != "checkpoint_final.pth":
                continue
            ckpt = load_checkpoint(p)
            out[rel] = ({k: v.numpy().tobytes() for k, v in ckpt["state_dict"].items()}, ckpt["widths"])
        elif p.name.endswith(".nii.gz"):
            out[rel] = read_image(p)[0].tobytes()
        else:
            out[rel] = p.read_bytes()
    return out


def _world(root: Path, stage: str, reference: Path | None) -> Path:
    """The inputs of ``stage``: a tiny raw dataset, plus (for train/predict) the reference's preprocessed data and
    (for predict) its trained model."""
    world = root
    make_raw_dataset(world / "raw")
    if stage in ("train", "predict"):
        shutil.copytree(reference / "preprocessed", world / "preprocessed")
    if stage == "predict":
        shutil.copytree(reference / "results", world / "results")
    return world


STAGES = {
    # stage: (cli function, argv(world), folder whose outputs are compared, argv for the rerun)
    "plan": ("plan_and_preprocess_main", lambda w: ["-d", "5", "--preset", "cpu", "-np", "1", "--no-progress"],
             lambda w: w / "preprocessed", lambda a: a),
    "train": ("train_main", lambda w: TRAIN, lambda w: w / "results", lambda a: a + ["--continue"]),
    "predict": ("predict_main", lambda w: ["-i", str(w / "raw" / "Dataset005_Tiny" / "imagesTr"), "-o",
                                           str(w / "pred"), "-d", "5", "-p", "cpu", "-tr", "Trainer", "-f", "0",
                                           "--no-progress", "--threads", "1"],
                lambda w: w / "pred", lambda a: a + ["--continue"]),
    "import": ("import_nnunet_main", lambda w: ["-m", str(NNUNET_MODEL), "-o", str(w / "imported")],
               lambda w: w / "imported", lambda a: a + ["--overwrite"]),
}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Each stage run once without interruption (the later stages use the earlier ones' outputs)."""
    root = tmp_path_factory.mktemp("reference")
    refs = {}
    make_raw_dataset(root / "raw")
    for stage, (fn, argv, outputs, _) in STAGES.items():
        t0 = time.perf_counter()
        _run(root, fn, argv(root))
        refs[stage] = (time.perf_counter() - t0, _digest(outputs(root), stage))
    return root, refs


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_then_rerun_gives_the_uninterrupted_outputs(references, tmp_path, stage):
    root, refs = references
    duration, expected = refs[stage]
    fn, argv, outputs, rerun = STAGES[stage]
    rng = random.Random(f"{stage}-kills")
    survived = 0
    for k in range(KILLS):
        world = _world(tmp_path / f"kill{k}", stage, root)
        proc = _run(world, fn, argv(world), wait=False)
        time.sleep(rng.uniform(0.2, duration))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        folder = outputs(world)
        for p in _files(folder) if folder.exists() else []:
            _loads(p)  # nothing final is corrupt
        _run(world, fn, rerun(argv(world)))
        assert _digest(outputs(world), stage) == expected, f"{stage}: kill {k} changed the outputs"
        survived += 1
        shutil.rmtree(world)
    TALLY[stage] = [survived, KILLS]
    print(f"\nkill -9 survived: {stage}: {survived} of {KILLS} (outputs identical after rerun)")


def test_two_trainings_of_one_fold_cannot_mix(references, tmp_path):
    """The second of two concurrent trainings of one fold refuses at once; the first is untouched."""
    root, _ = references
    world = _world(tmp_path / "w", "train", root)
    fold = world / "results" / "Dataset005_Tiny" / "Trainer__cpu__3d_fullres" / "fold_0"
    with exclusive_lock(fold, "training this fold"):  # the first training, still running
        proc = _run(world, "train_main", TRAIN, wait=False)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "already training this fold" in err
    assert list(fold.iterdir()) == []



def test_two_predictions_into_one_folder_both_finish_correctly(references, tmp_path):
    """Each case is written through its own temporary file and renamed: two runs into one folder both finish,
    and every output is whole and equal to the uninterrupted run's."""
    root, refs = references
    world = _world(tmp_path / "w", "predict", root)
    fn, argv, outputs, _ = STAGES["predict"]
    procs = [_run(world, fn, argv(world), wait=False) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    assert _digest(outputs(world), "predict") == refs["predict"][1]
