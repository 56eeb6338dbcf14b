"""nnU-Net v2 raw datasets: ``dataset.json`` parsing and integrity checks.

Layout (read as it is)::

    DatasetXXX_Name/
      dataset.json      {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
                         "numTraining": 10, "file_ending": ".nii.gz"}
      imagesTr/CASE_0000.nii.gz   (one file per channel: _0000, _0001, ...)
      labelsTr/CASE.nii.gz
      imagesTs/CASE_0000.nii.gz   (optional)

Every problem found is one line naming the file and the fix; :class:`DatasetError` carries them all so a user
fixes a dataset in one round instead of one error at a time.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sauronnet.io import Geometry, read_geometry, read_images, read_seg
from sauronnet.parallel import map_with_progress
from sauronnet.serialization import read_json

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


class DatasetError(ValueError):
    """A dataset failed its checks; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Case:
    """One case: its channel files in channel order and its label file (None for unlabeled test cases)."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass(frozen=True)
class RawDataset:
    """A parsed nnU-Net v2 raw dataset folder."""

    folder: Path
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    num_training: int
    file_ending: str
    training: tuple[Case, ...]
    test: tuple[Case, ...]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(sorted(self.labels.values()))

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        return tuple(v for v in self.label_values if v != 0)


def load_raw_dataset(folder: str | Path) -> RawDataset:
    """Parses ``dataset.json`` and pairs image and label files (the cheap structural check).

    Raises:
        FileNotFoundError: the folder or its dataset.json is missing.
        DatasetError: with every structural problem found (missing channels, labels, keys...).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: dataset folder not found")
    spec_path = folder / "dataset.json"
    spec = read_json(spec_path)
    problems: list[str] = []
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        hint = " (nnU-Net v1's 'modality' is now called 'channel_names')" if "modality" in spec else ""
        raise DatasetError([f"{spec_path}: missing key(s) {missing}{hint}; see the README's data layout"])
    channel_names, labels = parse_channel_names(spec, spec_path), parse_labels(spec, spec_path)
    file_ending = spec["file_ending"]
    if not isinstance(file_ending, str) or not file_ending.startswith("."):
        raise DatasetError([f"{spec_path}: file_ending must be a string like '.nii.gz', got {file_ending!r}"])
    num_training = spec["numTraining"]
    if not isinstance(num_training, int) or isinstance(num_training, bool) or num_training < 1:
        raise DatasetError([f"{spec_path}: numTraining must be a positive integer, got {num_training!r}"])

    training, n_found = _pair_cases(folder / "imagesTr", folder / "labelsTr", len(channel_names), file_ending,
                                    problems)
    test, _ = _pair_cases(folder / "imagesTs", None, len(channel_names), file_ending, problems)
    if not n_found:
        problems.append(f"{folder / 'imagesTr'}: no training images ending in {file_ending}; expected files "
                        f"named CASE_0000{file_ending}")
    elif n_found != num_training:
        problems.append(f"{spec_path}: numTraining is {num_training} but imagesTr holds {n_found} cases; "
                        "correct numTraining")
    if problems:
        raise DatasetError(problems)
    return RawDataset(folder, channel_names, labels, num_training, file_ending, tuple(training), tuple(test))


def parse_channel_names(spec: dict, spec_path: Path) -> tuple[str, ...]:
    ch = spec["channel_names"]
    if not isinstance(ch, dict) or not ch:
        raise DatasetError([f"{spec_path}: channel_names must be a non-empty object like {{\"0\": \"CT\"}}"])
    try:
        keys = sorted(int(k) for k in ch)
    except ValueError:
        raise DatasetError([f"{spec_path}: channel_names keys must be channel indices \"0\", \"1\", ..."]) from None
    if keys != list(range(len(keys))):
        raise DatasetError([f"{spec_path}: channel_names keys must be 0..{len(keys) - 1} without gaps, got {keys}"])
    return tuple(str(ch[str(k)]) for k in keys)


def parse_labels(spec: dict, spec_path: Path) -> dict[str, int]:
    labels = spec["labels"]
    if not isinstance(labels, dict):
        raise DatasetError([f"{spec_path}: labels must be an object like {{\"background\": 0, \"tumor\": 1}}"])
    out: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DatasetError([f"{spec_path}: label {name!r} is a region {value}; region-based training is not "
                                "supported, give each label a single integer"])
        if name == "ignore":
            raise DatasetError([f"{spec_path}: the 'ignore' label is not supported yet; remove it"])
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DatasetError([f"{spec_path}: label {name!r} must be a non-negative integer, got {value!r}"])
        out[str(name)] = value
    values = sorted(out.values())
    if 0 not in values:
        raise DatasetError([f"{spec_path}: labels must declare background as 0"])
    if values != list(range(len(values))):
        raise DatasetError([f"{spec_path}: label values must be consecutive 0..{len(values) - 1}, got {values}"])
    return out


def _pair_cases(images_dir: Path, labels_dir: Path | None, n_channels: int, ending: str,
                problems: list[str]) -> tuple[list[Case], int]:
    """Complete cases of a folder, and how many case ids it holds (complete or not)."""
    if not images_dir.is_dir():
        return [], 0
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
    by_case: dict[str, dict[int, Path]] = {}
    for p in sorted(images_dir.iterdir()):
        if p.name.startswith("."):
            continue
        m = pattern.match(p.name)
        if not m:
            if p.name.endswith(ending):
                problems.append(f"{p}: name must be CASE_XXXX{ending} (XXXX = 4-digit channel index); rename it")
            continue
        by_case.setdefault(m.group(1), {})[int(m.group(2))] = p
    folded: dict[str, list[str]] = {}
    for case_id in by_case:
        folded.setdefault(case_id.lower(), []).append(case_id)
    for ids in folded.values():
        if len(ids) > 1:
            problems.append(f"{images_dir}: case ids {', '.join(sorted(ids))} differ only in letter case; their "
                            "outputs would overwrite each other on case-insensitive file systems: rename one")
    if labels_dir is not None and labels_dir.is_dir():
        for label in sorted(labels_dir.glob(f"*{ending}")):
            case_id = label.name[:-len(ending)]
            if not label.name.startswith(".") and case_id not in by_case:
                problems.append(f"{label}: no image file {case_id}_0000{ending} in {images_dir} for this label; add "
                                "the case's images or remove the label")
    cases = []
    for case_id, channels in sorted(by_case.items()):
        expected = set(range(n_channels))
        if set(channels) != expected:
            missing = sorted(expected - set(channels))
            extra = sorted(set(channels) - expected)
            if missing:
                names = ", ".join(f"{case_id}_{c:04d}{ending}" for c in missing)
                problems.append(f"{images_dir}: case {case_id} lacks channel file(s) {names}; add them or remove "
                                "the case")
            if extra:
                names = ", ".join(str(channels[c]) for c in extra)
                problems.append(f"{names}: channel index not declared in dataset.json channel_names; declare it "
                                "or remove the file")
            continue
        label = None
        if labels_dir is not None:
            label = labels_dir / f"{case_id}{ending}"
            if not label.is_file():
                problems.append(f"{label}: label file missing for case {case_id}; add it or remove the case's "
                                "images")
                continue
        cases.append(Case(case_id, tuple(channels[c] for c in range(n_channels)), label))
    return cases, len(by_case)


def check_headers(case: Case) -> list[str]:
    """Reads only the headers of a case's files and checks that images and label share one grid."""
    problems = []
    try:
        ref = read_geometry(case.images[0])
    except ValueError as e:
        return [str(e)]
    for p in (*case.images[1:], *((case.label,) if case.label else ())):
        try:
            geo = read_geometry(p)
        except ValueError as e:
            problems.append(str(e))
            continue
        diff = ref.mismatch(geo)
        if diff:
            problems.append(f"{p}: {diff} compared with {case.images[0].name}; resample it onto the image grid "
                            "(all files of a case must share shape, spacing, origin and direction)")
    return problems


def check_content(case: Case, images: np.ndarray, seg: np.ndarray | None, label_values: tuple[int, ...]) -> list[str]:
    """Checks voxel content: finite image values; integer labels taken only from the declared values.

    Args:
        images: float32 (C, Z, Y, X) as read.
        seg: (Z, Y, X) as read, or None.
    """
    problems = []
    for c, path in enumerate(case.images):
        if not np.isfinite(images[c]).all():
            n = int(np.size(images[c]) - np.count_nonzero(np.isfinite(images[c])))
            problems.append(f"{path}: {n} NaN/inf voxel(s); replace them (e.g. with the background value)")
    if seg is not None and case.label is not None:
        if np.issubdtype(seg.dtype, np.floating):
            if not np.isfinite(seg).all() or not np.all(seg == np.round(seg)):
                problems.append(f"{case.label}: label map holds non-integer values; save it as an integer image")
                return problems
        found = np.unique(seg).astype(np.int64)
        unexpected = sorted(set(found.tolist()) - set(label_values))
        if unexpected:
            problems.append(f"{case.label}: label value(s) {unexpected} are not declared in dataset.json labels "
                            f"{list(label_values)}; declare them or fix the label map")
    return problems


def read_checked_case(case: Case, label_values: tuple[int, ...]
                      ) -> tuple[np.ndarray | None, np.ndarray | None, Geometry | None, list[str]]:
    """Reads a case after checking its headers, then checks its content.

    Returns:
        images float32 (C, Z, Y, X), label map (Z, Y, X) or None, the geometry, and the problems found (when
        there are any, the arrays are None).
    """
    problems = check_headers(case)
    if problems:
        return None, None, None, problems
    try:
        images, geometry = read_images(case.images)
        seg = read_seg(case.label)[0] if case.label else None
    except (ValueError, FileNotFoundError) as e:
        return None, None, None, [str(e)]
    problems = check_content(case, images, seg, label_values)
    if problems:
        return None, None, None, problems
    return images, seg, geometry, []


def _verify_one(job: tuple[Case, tuple[int, ...]]) -> list[str]:
    return read_checked_case(*job)[3]


def verify_dataset(dataset: RawDataset, num_processes: int = 1, progress: bool = True) -> list[str]:
    """The full check (``--verify``): every training and test case is read and checked; returns all problems."""
    jobs = [(c, dataset.label_values) for c in (*dataset.training, *dataset.test)]
    results = map_with_progress(_verify_one, jobs, num_processes, "Verify", progress)
    return [p for r in results for p in r]
