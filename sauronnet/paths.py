"""Data roots and task lookup.

A TASK is a dataset id (``1``, ``001``) or a folder name (``Dataset001_Demo``). Environment variables are read
only in :mod:`sauronnet.cli`; everything else receives a :class:`Paths`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NAME_RE = re.compile(r"^Dataset(\d{3})_\S+$")


@dataclass(frozen=True)
class Paths:
    """The three data roots (nnU-Net's raw / preprocessed / results)."""

    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def under(cls, root: str | Path) -> Paths:
        """The default layout ``root/{raw,preprocessed,results}``."""
        root = Path(root)
        return cls(root / "raw", root / "preprocessed", root / "results")

    def dataset_name(self, task: str | int) -> str:
        """Resolves a TASK (id or folder name) to ``DatasetXXX_Name`` by looking in all three roots.

        Raises:
            FileNotFoundError: if no root holds such a dataset (the message lists what exists).
            ValueError: if an id matches several folders, or TASK is malformed.
        """
        task = str(task).strip()
        roots = (self.raw, self.preprocessed, self.results)
        if _NAME_RE.match(task):
            if any((r / task).is_dir() for r in roots):
                return task
            raise FileNotFoundError(
                f"dataset folder {task!r} not found in {self.raw}, {self.preprocessed} or {self.results}; "
                f"available: {self.available() or 'none'} (set SAURON_RAW to the folder holding your datasets)")
        if not task.isdigit():
            raise ValueError(f"TASK {task!r} is neither a dataset id (e.g. 1) nor a folder name like Dataset001_Name")
        prefix = f"Dataset{int(task):03d}_"
        found = sorted({p.name for r in roots if r.is_dir() for p in r.iterdir()
                        if p.is_dir() and p.name.startswith(prefix)})
        if not found:
            raise FileNotFoundError(
                f"no dataset with id {int(task)} (a folder {prefix}*) in {self.raw}, {self.preprocessed} or "
                f"{self.results}; available: {self.available() or 'none'} (set SAURON_RAW to the folder holding "
                "your datasets)")
        if len(found) > 1:
            raise ValueError(f"dataset id {int(task)} is ambiguous: {found}; pass the folder name instead")
        return found[0]

    def available(self) -> list[str]:
        """All dataset folder names found under the three roots."""
        return sorted({p.name for r in (self.raw, self.preprocessed, self.results) if r.is_dir()
                       for p in r.iterdir() if p.is_dir() and _NAME_RE.match(p.name)})
