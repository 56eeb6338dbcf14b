"""One case through nnU-Net's preprocessing, its inverse for label maps, and the dataset-level runner.

Forward (:func:`preprocess_case`): transpose → crop to nonzero → normalise → resample to the configuration's
spacing → foreground locations per class. Stored per case in ``PREPROCESSED/DatasetXXX/PRESET/CONFIG/``:

- ``CASE.npy``      float32 (C, Z, Y, X) — memory-mappable;
- ``CASE_seg.npy``  int8 / int16 (1, Z, Y, X), -1 outside the nonzero mask;
- ``CASE.json``     :class:`CaseProperties` (plain JSON, no pickle): everything needed to undo the steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sauronnet.atomic import atomic_path
from sauronnet.dataset import Case, RawDataset
from sauronnet.io import Geometry, read_images, read_seg
from sauronnet.parallel import map_with_progress
from sauronnet.plans import ConfigurationPlan, Plans
from sauronnet.preprocessing.crop import crop_to_nonzero
from sauronnet.preprocessing.normalize import normalize_channel
from sauronnet.preprocessing.resample import compute_new_shape, resample_data, resample_seg
from sauronnet.serialization import load_dataclass, write_json_atomic

#: nnU-Net's foreground-location sampling: at most this many per class, but at least 1 % of the class' voxels.
MAX_LOCATIONS_PER_CLASS = 10_000
MIN_LOCATION_COVERAGE = 0.01
LOCATION_SEED = 1234


@dataclass(frozen=True)
class CaseProperties:
    """How a case was preprocessed (``CASE.json``). Spatial tuples are in transposed array order.

    Attributes:
        geometry: the input's header, to write predictions back onto it.
        original_spacing: input spacing after transpose (mm).
        shape_before_cropping: input shape after transpose.
        bbox: half-open crop box ``((z0, z1), (y0, y1), (x0, x1))`` in the transposed input.
        shape_after_cropping: shape after crop, before resampling.
        target_spacing: spacing after resampling (3 values, also for 2d configurations).
        class_locations: per foreground label, sampled voxel coordinates (z, y, x) in the preprocessed array.
    """

    case_id: str
    geometry: Geometry
    original_spacing: tuple[float, ...]
    shape_before_cropping: tuple[int, ...]
    bbox: tuple[tuple[int, int], ...]
    shape_after_cropping: tuple[int, ...]
    target_spacing: tuple[float, ...]
    class_locations: dict[int, tuple[tuple[int, ...], ...]]


def target_spacing_3d(config: ConfigurationPlan, original_spacing: Sequence[float]) -> tuple[float, ...]:
    """A 2d configuration keeps the case's own spacing along the first (slice) axis."""
    if len(config.spacing) < 3:
        return (float(original_spacing[0]), *config.spacing)
    return tuple(config.spacing)


def sample_class_locations(seg: np.ndarray, labels: Sequence[int], seed: int = LOCATION_SEED
                           ) -> dict[int, tuple[tuple[int, ...], ...]]:
    """Up to 10 000 (and ≥ 1 %) voxel coordinates per label, for foreground oversampling."""
    rng = np.random.RandomState(seed)
    out: dict[int, tuple[tuple[int, ...], ...]] = {}
    for label in labels:
        locs = np.argwhere(seg == label)
        if len(locs) == 0:
            out[int(label)] = ()
            continue
        n = max(min(MAX_LOCATIONS_PER_CLASS, len(locs)), int(np.ceil(len(locs) * MIN_LOCATION_COVERAGE)))
        picked = locs[np.sort(rng.choice(len(locs), n, replace=False))]
        out[int(label)] = tuple(tuple(int(v) for v in row) for row in picked)
    return out


def preprocess_case(data: np.ndarray, seg: np.ndarray | None, geometry: Geometry, case_id: str, plans: Plans,
                    config: ConfigurationPlan) -> tuple[np.ndarray, np.ndarray, CaseProperties]:
    """Runs the forward preprocessing on arrays (no file I/O).

    Args:
        data: float32 (C, Z, Y, X) as read.
        seg: integer (Z, Y, X) as read, or None for images without labels.
        geometry: the input's header.

    Returns:
        ``data`` float32 (C, z, y, x); ``seg`` int8/int16 (1, z, y, x) (-1 outside the nonzero mask; all 0/-1 if
        no label map was given); the :class:`CaseProperties`.
    """
    fwd = list(plans.transpose_forward)
    data = data.transpose([0, *[a + 1 for a in fwd]])
    if seg is not None:
        seg = seg.transpose(fwd)
    spacing = tuple(float(geometry.spacing_zyx[a]) for a in fwd)
    shape_before = tuple(int(s) for s in data.shape[1:])
    data, seg_c, bbox = crop_to_nonzero(data, seg)
    shape_after = tuple(int(s) for s in data.shape[1:])
    target = target_spacing_3d(config, spacing)
    new_shape = compute_new_shape(shape_after, spacing, target)
    stats = plans.foreground_intensity_properties_per_channel
    data = np.stack([normalize_channel(data[c], config.normalization_schemes[c], config.use_mask_for_norm[c], seg_c,
                                       stats[c] if c < len(stats) else None) for c in range(data.shape[0])])
    data = resample_data(data, new_shape, spacing, target, config.resampling_data_order,
                         config.resampling_data_order_z)
    seg_r = resample_seg(seg_c, new_shape, spacing, target, config.resampling_seg_order,
                         config.resampling_seg_order_z)
    fg_labels = [v for v in sorted(plans.labels.values()) if v != 0]
    locations = sample_class_locations(seg_r, fg_labels) if seg is not None else {}
    seg_r = seg_r.astype(np.int8 if seg_r.max(initial=0) <= 127 else np.int16)[None]
    props = CaseProperties(case_id, geometry, spacing, shape_before, bbox, shape_after, target, locations)
    return data.astype(np.float32, copy=False), seg_r, props


def restore_seg(seg: np.ndarray, props: CaseProperties, plans: Plans, config: ConfigurationPlan) -> np.ndarray:
    """Undoes :func:`preprocess_case` for a label map: resample back, uncrop, transpose back.

    Args:
        seg: integer (z, y, x) on the preprocessed grid (-1 is treated as background).

    Returns:
        (Z, Y, X) label map on the input's grid (``props.geometry.shape``), dtype of ``seg``.
    """
    seg = np.where(seg < 0, 0, seg).astype(seg.dtype)
    cropped = resample_seg(seg, props.shape_after_cropping, props.target_spacing, props.original_spacing,
                           config.resampling_seg_order, config.resampling_seg_order_z)
    return uncrop(cropped, props, plans.transpose_backward)


def uncrop(cropped: np.ndarray, props: CaseProperties, transpose_backward: Sequence[int],
           first_channel_outside: float = 0) -> np.ndarray:
    """Undoes the crop and the transpose of :func:`preprocess_case`.

    Args:
        cropped: (z, y, x) or (K, z, y, x) at the cropped input's resolution (``props.shape_after_cropping``).
        first_channel_outside: value of channel 0 outside the crop box (1 for background probabilities);
            everything else outside is 0.

    Returns:
        (Z, Y, X) or (K, Z, Y, X) on the input's grid, dtype of ``cropped``.
    """
    lead = cropped.ndim - len(props.shape_before_cropping)
    full = np.zeros((*cropped.shape[:lead], *props.shape_before_cropping), cropped.dtype)
    if lead and first_channel_outside:
        full[0] = first_channel_outside
    full[(slice(None),) * lead + tuple(slice(a, b) for a, b in props.bbox)] = cropped
    return full.transpose([*range(lead), *[a + lead for a in transpose_backward]])


def config_folder(preprocessed_dataset: Path, preset: str, config_name: str) -> Path:
    """Where the preprocessed cases of one configuration live."""
    return preprocessed_dataset / preset / config_name


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, ".npy") as tmp:
        np.save(tmp, array)


def _preprocess_and_save(job: tuple[Case, Plans, str, Path]) -> str:
    case, plans, config_name, out = job
    data, geometry = read_images(case.images)
    seg = read_seg(case.label)[0] if case.label else None
    config = plans.configuration(config_name)
    data, seg_p, props = preprocess_case(data, seg, geometry, case.case_id, plans, config)
    _save_npy_atomic(out / f"{case.case_id}.npy", data)
    _save_npy_atomic(out / f"{case.case_id}_seg.npy", seg_p)
    write_json_atomic(out / f"{case.case_id}.json", props)
    return case.case_id


def preprocess_dataset(dataset: RawDataset, plans: Plans, config_name: str, out: Path, num_processes: int = 1,
                       progress: bool = True) -> list[str]:
    """Preprocesses every training case of ``dataset`` into ``out`` (each file written atomically).

    Returns:
        the case ids written.
    """
    plans.configuration(config_name)  # fail early on an unknown configuration
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(c, plans, config_name, out) for c in dataset.training]
    return sorted(map_with_progress(_preprocess_and_save, jobs, num_processes, f"Preprocess {config_name}", progress))


def check_preprocessed(folder: Path, case_ids: Sequence[str], remedy: str) -> None:
    """Opens every case's arrays (memory-mapped: headers and sizes only) and properties.

    Raises:
        ValueError: naming the damaged or missing files (at most five) and ``remedy``, the command that
            rewrites them.
    """
    problems = []
    for case_id in case_ids:
        for name in (f"{case_id}.npy", f"{case_id}_seg.npy", f"{case_id}.json"):
            path = folder / name
            try:
                if name.endswith(".npy"):
                    np.load(path, mmap_mode="r")
                else:
                    load_dataclass(CaseProperties, path)
            except (OSError, ValueError) as e:
                problems.append(f"{path} ({str(e).splitlines()[0][:80]})")
    if problems:
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError(f"preprocessed file(s) missing or damaged: {'; '.join(problems[:5])}{more}; rewrite them: "
                         f"{remedy}")


def load_case(folder: Path, case_id: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, CaseProperties]:
    """Loads a preprocessed case: data (C, Z, Y, X), seg (1, Z, Y, X) — memory-mapped by default — and properties."""
    mode = "r" if mmap else None
    data = np.load(folder / f"{case_id}.npy", mmap_mode=mode)
    seg = np.load(folder / f"{case_id}_seg.npy", mmap_mode=mode)
    return data, seg, load_dataclass(CaseProperties, folder / f"{case_id}.json")
