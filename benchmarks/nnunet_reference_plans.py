"""Prints nnU-Net v2.8.1's plans for hand-made fingerprints, as the literals used by tests/unit/test_planners.py.

Usage::

    .venv/bin/python benchmarks/nnunet_reference_plans.py

For each fingerprint below it writes a minimal raw dataset (dataset.json + one tiny image, only used by nnU-Net
to pick its reader) and the fingerprint into a temporary nnUNet_preprocessed folder, runs
``nnUNetv2_plan_experiment`` from ``.bench-venv`` (which plans from an existing fingerprint), and prints the
fields SauronNet must reproduce, next to SauronNet's own, with a match flag.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import nnunet_bin, run_measured  # noqa: E402
from benchmarks.plan_parity import nnunet_fields, our_fields  # noqa: E402

STATS = {"mean": 100.0, "median": 90.0, "std": 50.0, "min": -1000.0, "max": 2000.0,
         "percentile_00_5": -900.0, "percentile_99_5": 1500.0}

#: name -> (channel_names, numTraining, spacings (z, y, x), shapes_after_crop, median_relative_size)
CASES = {
    "anisotropic": ({"0": "MR"}, 20,
                    [[5.0, 0.7, 0.7]] * 10 + [[4.0, 0.72, 0.72]] * 5 + [[6.0, 0.68, 0.68]] * 5,
                    [[20, 256, 256]] * 20, 0.9),
    "transposed": ({"0": "MR"}, 8, [[1.0, 1.0, 3.2]] * 8, [[100, 120, 40]] * 8, 0.8),
    "large_ct": ({"0": "CT"}, 30, [[2.5, 0.8, 0.8]] * 30, [[300, 512, 512]] * 30, 0.95),
    "two_channels": ({"0": "CT", "1": "T2"}, 12, [[1.5, 1.0, 1.0]] * 12, [[80, 96, 96]] * 12, 0.6),
}


def fingerprint_json(case) -> dict:
    channels, _, spacings, shapes, rel = case
    return {"spacings": spacings, "shapes_after_crop": shapes,
            "foreground_intensity_properties_per_channel": {k: dict(STATS) for k in channels},
            "median_relative_size_after_cropping": rel}


def nnunet_plans(name: str, case, work: Path, dataset_id: int) -> dict:
    channels, n_train = case[0], case[1]
    ds = f"Dataset{dataset_id:03d}_{name}"
    raw = work / "raw" / ds
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for ch in channels:
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)),
                        str(raw / "imagesTr" / f"c_{int(ch):04d}.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8)), str(raw / "labelsTr" / "c.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({"channel_names": channels, "labels": {"background": 0, "a": 1},
                                                  "numTraining": n_train, "file_ending": ".nii.gz"}))
    pre = work / "pre" / ds
    pre.mkdir(parents=True)
    (pre / "dataset_fingerprint.json").write_text(json.dumps(fingerprint_json(case)))
    run_measured([nnunet_bin("nnUNetv2_plan_experiment"), "-d", str(dataset_id)],
                 env={"nnUNet_raw": str(work / "raw"), "nnUNet_preprocessed": str(work / "pre"),
                      "nnUNet_results": str(work / "res")})
    return json.loads((pre / "nnUNetPlans.json").read_text())


def our_plans(name: str, case) -> dict:
    from planners import NnUNetPlanner
    from sauronnet.dataset import RawDataset
    from sauronnet.fingerprint import Fingerprint, IntensityStats
    from sauronnet.serialization import to_jsonable
    channels, n_train, spacings, shapes, rel = case
    fp = Fingerprint(tuple(f"c{i}" for i in range(len(spacings))), tuple(map(tuple, spacings)),
                     tuple(map(tuple, shapes)), tuple(IntensityStats(**STATS) for _ in channels), rel)
    ds = RawDataset(Path(name), tuple(channels.values()), {"background": 0, "a": 1}, n_train, ".nii.gz", (), ())
    return to_jsonable(NnUNetPlanner().plan(ds, fp))


def main() -> int:
    if nnunet_bin("nnUNetv2_plan_experiment") is None:
        raise SystemExit("nnU-Net v2 not found in .bench-venv")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, case) in enumerate(CASES.items()):
            theirs = nnunet_plans(name, case, Path(tmp), 100 + i)
            ours = our_plans(name, case)
            print(f"# {name}: transpose_forward {theirs['transpose_forward']} (ours {ours['transpose_forward']})")
            ok &= theirs["transpose_forward"] == list(ours["transpose_forward"])
            for c in sorted(set(theirs["configurations"]) - {"3d_cascade_fullres"} | set(ours["configurations"])):
                a = nnunet_fields(theirs["configurations"][c]) if c in theirs["configurations"] else None
                b = our_fields(ours["configurations"][c]) if c in ours["configurations"] else None
                ok &= a == b
                print(f"{name!r}, {c!r}: {a}  # match: {a == b}")
    print("ALL MATCH" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
