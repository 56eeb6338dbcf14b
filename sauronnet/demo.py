"""The built-in synthetic demo dataset (nnU-Net v2 raw layout), deterministic for a given seed.

Each case is an MR-like volume: an ellipsoidal "body" (zero outside, so cropping matters) with a smooth
multiplicative bias field and Gaussian noise, holding two structures of different shape and contrast:

- label 1 ``lesion``: a bright ellipsoid (+60 % of the body intensity), 6–11 mm radii;
- label 2 ``vessel``: a dark tube (−45 %), 2.5–4 mm radius, 25–45 mm long, random orientation.

Voxels are anisotropic (default 1 × 1 × 2.5 mm, x × y × z) and every case has a non-trivial origin and an
oblique direction, so geometry bugs show. Test images go to ``imagesTs``; their reference labels are kept apart
in ``labelsTs`` (nnU-Net never reads that folder).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sauronnet.atomic import atomic_dir

LABELS = {"background": 0, "lesion": 1, "vessel": 2}


@dataclass(frozen=True)
class DemoSpec:
    """What to generate. Sizes and spacings are in ITK order (x, y, z)."""

    dataset_id: int = 1
    name: str = "Demo"
    n_train: int = 12
    n_test: int = 4
    size_xyz: tuple[int, int, int] = (64, 64, 28)
    size_jitter: int = 4
    spacing_xyz: tuple[float, float, float] = (1.0, 1.0, 2.5)
    channel_name: str = "MR"
    seed: int = 0
    #: False: zero outside the body (cropping and masked normalisation apply); True: low noise everywhere.
    background_noise: bool = False

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


def _rotation(rng: np.random.RandomState) -> np.ndarray:
    """A proper rotation of 10–25° about z then 3–8° about x (NIfTI-representable)."""
    a, b = np.deg2rad(rng.uniform(10, 25)), np.deg2rad(rng.uniform(3, 8))
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def make_case(spec: DemoSpec, index: int) -> tuple[sitk.Image, sitk.Image]:
    """Generates case ``index``: (float32 image, uint8 label map) sharing one geometry."""
    rng = np.random.RandomState(spec.seed * 100_003 + index)
    size = [int(s + rng.randint(-spec.size_jitter, spec.size_jitter + 1)) for s in spec.size_xyz]
    sx, sy, sz = spec.spacing_xyz
    # Physical coordinates (mm) relative to the volume centre, arrays in (z, y, x) order.
    z, y, x = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(size[::-1], (sz, sy, sx))],
                          indexing="ij")
    ext = np.array([size[0] * sx, size[1] * sy, size[2] * sz]) / 2  # half extents x, y, z
    body_r = ext * rng.uniform(0.82, 0.92, 3)
    body = (x / body_r[0]) ** 2 + (y / body_r[1]) ** 2 + (z / body_r[2]) ** 2 <= 1
    seg = np.zeros(body.shape, np.uint8)

    # lesion: ellipsoid well inside the body
    radii = rng.uniform(6, 11, 3)
    centre = rng.uniform(-0.45, 0.45, 3) * (body_r - radii.max())
    lesion = sum(((c - m) / r) ** 2 for c, m, r in zip((x, y, z), centre, radii)) <= 1
    seg[lesion & body] = 1

    # vessel: a tube segment with random orientation
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    start = rng.uniform(-0.5, 0.5, 3) * body_r
    length, radius = rng.uniform(25, 45), rng.uniform(2.5, 4.0)
    rel = np.stack([x - start[0], y - start[1], z - start[2]])
    t = np.clip(np.tensordot(direction, rel, axes=1), 0, length)
    dist = np.linalg.norm(rel - t * direction[:, None, None, None], axis=0)
    seg[(dist <= radius) & body] = 2

    base = rng.uniform(80, 120)
    img = np.where(body, base, 0.0)
    img[seg == 1] *= 1.6
    img[seg == 2] *= 0.55
    gx, gy, gz = rng.uniform(-0.15, 0.15, 3)
    bias = 1 + gx * x / ext[0] + gy * y / ext[1] + gz * z / ext[2] + 0.1 * (x / ext[0]) ** 2
    img = img * bias + rng.normal(0, 0.08 * base, img.shape) * body
    if spec.background_noise:
        img = img + np.abs(rng.normal(0, 0.05 * base, img.shape)) * ~body
    img = img.astype(np.float32)

    geometry = dict(spacing=tuple(float(s) for s in spec.spacing_xyz),
                    origin=tuple(float(o) for o in rng.uniform(-120, 120, 3).round(3)),
                    direction=tuple(float(d) for d in _rotation(rng).ravel()))
    out = []
    for arr in (img, seg):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing(geometry["spacing"])
        im.SetOrigin(geometry["origin"])
        im.SetDirection(geometry["direction"])
        out.append(im)
    return out[0], out[1]


def write_demo_dataset(raw_root: str | Path, spec: DemoSpec = DemoSpec(), overwrite: bool = False) -> Path:
    """Writes the dataset under ``raw_root/DatasetXXX_Name`` (built in a temporary folder, then moved in place).

    Raises:
        FileExistsError: if the folder exists and ``overwrite`` is False.
    """
    raw_root = Path(raw_root)
    target = raw_root / spec.folder_name
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    with atomic_dir(target) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for i in range(spec.n_train + spec.n_test):
            train = i < spec.n_train
            case_id = f"{spec.name.lower()}_{i:03d}"
            img, seg = make_case(spec, i)
            sitk.WriteImage(img, str(tmp / ("imagesTr" if train else "imagesTs") / f"{case_id}_0000.nii.gz"), True)
            sitk.WriteImage(seg, str(tmp / ("labelsTr" if train else "labelsTs") / f"{case_id}.nii.gz"), True)
        (tmp / "dataset.json").write_text(json.dumps({
            "name": spec.name,
            "description": "SauronNet synthetic demo: MR-like body with a bright lesion and a dark vessel",
            "channel_names": {"0": spec.channel_name},
            "labels": LABELS,
            "numTraining": spec.n_train,
            "file_ending": ".nii.gz",
        }, indent=2) + "\n")
    return target
