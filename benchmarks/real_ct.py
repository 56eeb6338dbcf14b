"""Real CT cases from the TotalSegmentator 2.18.0 source distribution on PyPI, as an nnU-Net v2 raw dataset.

Usage::

    .venv/bin/python benchmarks/real_ct.py        # prints the dataset folder (downloads once, ~38 MB)

The sdist's ``tests/reference_files`` hold two labelled CTs (TotalSegmentator's multi-class "total" labels):

- ``example_ct_sm.nii.gz`` + ``example_seg.nii.gz``: 122 × 101 × 30 voxels, 3 mm;
- the DICOM series ``example_ct_dicom`` (512 × 512 × 20, 0.98 × 0.98 × 2 mm) + ``example_seg_dicom.nii.gz``,
  whose label is stored with a flipped y direction: it is resampled onto the CT grid in world coordinates
  (nearest neighbour; the grids coincide, so no label value is interpolated);

and one unlabelled CT, ``aorta_report/example_ct.nii.gz`` (233 × 167 × 191, 1.5 mm), used as a test image.
Everything is written to ``benchmarks/cache/`` (git-ignored), never committed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, OUR_BIN  # noqa: E402

SDIST = "totalsegmentator==2.18.0"
NAME = "Dataset010_TotalSegCT"
N_LABELS = 117  # TotalSegmentator v2 "total" task: labels 1..117


def _sdist() -> Path:
    folder = CACHE / "sdist"
    found = sorted(folder.glob("totalsegmentator-2.18.0.tar.gz"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([OUR_BIN / "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d", folder],
                       check=True, stdout=subprocess.DEVNULL)
        found = sorted(folder.glob("totalsegmentator-2.18.0.tar.gz"))
    return found[0]


def _extract(sdist: Path) -> Path:
    out = CACHE / "totalseg_reference_files"
    if not out.is_dir():
        prefix = "totalsegmentator-2.18.0/tests/reference_files/"
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(out, members=members, filter="data")
    return out


def ensure_dataset() -> Path:
    """Builds the raw dataset once; returns its folder."""
    target = CACHE / "raw" / NAME
    if (target / "dataset.json").is_file():
        return target
    ref = _extract(_sdist())
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.ReadImage(str(ref / "example_ct_sm.nii.gz"), sitk.sitkInt16),
                    str(target / "imagesTr" / "ct_sm_0000.nii.gz"))
    sitk.WriteImage(sitk.ReadImage(str(ref / "example_seg.nii.gz"), sitk.sitkUInt8),
                    str(target / "labelsTr" / "ct_sm.nii.gz"))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(ref / "example_ct_dicom")))
    ct = sitk.Cast(reader.Execute(), sitk.sitkInt16)
    seg = sitk.Resample(sitk.ReadImage(str(ref / "example_seg_dicom.nii.gz")), ct, sitk.Transform(),
                        sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    sitk.WriteImage(ct, str(target / "imagesTr" / "ct_dicom_0000.nii.gz"))
    sitk.WriteImage(seg, str(target / "labelsTr" / "ct_dicom.nii.gz"))
    sitk.WriteImage(sitk.ReadImage(str(ref / "aorta_report" / "example_ct.nii.gz"), sitk.sitkInt16),
                    str(target / "imagesTs" / "ct_aorta_0000.nii.gz"))
    labels = {"background": 0, **{f"structure_{i:03d}": i for i in range(1, N_LABELS + 1)}}
    (target / "dataset.json").write_text(json.dumps({
        "name": "TotalSegCT", "description": "CT cases from the TotalSegmentator 2.18.0 sdist (tests/reference_files)",
        "channel_names": {"0": "CT"}, "labels": labels, "numTraining": 2, "file_ending": ".nii.gz"}, indent=1))
    # the flipped label lands on the CT grid voxel for voxel: no label value is lost
    assert np.array_equal(np.unique(sitk.GetArrayFromImage(seg)),
                          np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(ref / "example_seg_dicom.nii.gz")))))
    return target


if __name__ == "__main__":
    print(ensure_dataset())
