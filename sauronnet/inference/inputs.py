"""Finding the cases to predict: a folder in nnU-Net naming, single image files, or DICOM series folders."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


@dataclass(frozen=True)
class InputCase:
    """One case to predict: its channel files (or DICOM folders) in channel order and the output ending."""

    case_id: str
    files: tuple[Path, ...]
    ending: str


def split_ending(path: Path) -> tuple[str, str]:
    """(stem, ending) with double endings such as ``.nii.gz`` kept whole; folders have ending ''."""
    if path.is_dir():
        return path.name, ""
    for e in ENDINGS:
        if path.name.endswith(e):
            return path.name[: -len(e)], e
    return path.stem, path.suffix


def _is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() for p in path.iterdir()) and not any(
        split_ending(p)[1] in ENDINGS for p in path.iterdir())


def find_cases(inputs: Sequence[str | Path], n_channels: int) -> tuple[list[InputCase], list[str]]:
    """Resolves ``-i`` arguments into cases; returns the cases and one problem line per unusable input.

    A folder of images is read in nnU-Net naming (``CASE_0000.nii.gz``, ``CASE_0001.nii.gz`` ...). A file or a
    DICOM series folder is one single-channel case named after it (a ``_0000`` suffix is dropped).
    Outputs keep the input's ending; DICOM inputs are written as ``.nii.gz``.
    """
    cases: list[InputCase] = []
    problems: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            problems.append(f"{path}: not found")
        elif path.is_dir() and not _is_dicom_folder(path):
            cases += _from_folder(path, n_channels, problems)
        else:
            stem, ending = split_ending(path)
            if n_channels != 1:
                problems.append(f"{path}: the model needs {n_channels} channels; give a folder with "
                                f"{stem}_0000..{stem}_{n_channels - 1:04d} files instead")
                continue
            m = _CHANNEL.match(stem)
            cases.append(InputCase(m.group(1) if m else stem, (path,), ending or ".nii.gz"))
    seen: dict[str, InputCase] = {}
    for c in cases:
        if c.case_id in seen:
            problems.append(f"{c.files[0]}: case id {c.case_id!r} also comes from {seen[c.case_id].files[0]}; "
                            "rename one of them")
        seen[c.case_id] = c
    return [c for c in cases if seen[c.case_id] is c], problems


def _from_folder(folder: Path, n_channels: int, problems: list[str]) -> list[InputCase]:
    by_case: dict[str, dict[int, Path]] = {}
    endings: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        stem, ending = split_ending(p)
        if p.name.startswith(".") or ending not in ENDINGS:
            continue
        m = _CHANNEL.match(stem)
        if not m:
            problems.append(f"{p}: name must be CASE_XXXX{ending} (XXXX = channel index, 0000 for one channel)")
            continue
        by_case.setdefault(m.group(1), {})[int(m.group(2))] = p
        endings[m.group(1)] = ending
    out = []
    for case_id, ch in sorted(by_case.items()):
        missing = [c for c in range(n_channels) if c not in ch]
        if missing:
            problems.append(f"{folder}: case {case_id} lacks channel(s) {missing}; the model needs {n_channels}")
            continue
        extra = [ch[c].name for c in sorted(ch) if c >= n_channels]
        if extra:
            problems.append(f"{', '.join(extra)}: the model reads {n_channels} channel(s) per case "
                            f"({case_id}_0000..{case_id}_{n_channels - 1:04d}); this case has more. Is it the "
                            "right model? Otherwise move the extra files away")
            continue
        out.append(InputCase(case_id, tuple(ch[c] for c in range(n_channels)), endings[case_id]))
    if not by_case and not problems:
        problems.append(f"{folder}: no images named CASE_0000{{{','.join(ENDINGS)}}}")
    return out
