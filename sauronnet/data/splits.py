"""Cross-validation splits (``splits_final.json``), identical to nnU-Net v2's.

nnU-Net: ``sklearn.model_selection.KFold(5, shuffle=True, random_state=12345)`` over the sorted case ids.
A user-supplied ``splits_final.json`` (in the raw dataset folder, or already in the preprocessed folder) is kept.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sklearn.model_selection import KFold

from sauronnet.serialization import from_jsonable, read_json, write_json_atomic

logger = logging.getLogger(__name__)

SPLITS_FILE = "splits_final.json"
N_SPLITS = 5
SEED = 12345


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]


def make_splits(case_ids: Sequence[str], n_splits: int = N_SPLITS, seed: int = SEED) -> list[Split]:
    """nnU-Net's folds over the sorted ``case_ids``."""
    ids = sorted(case_ids)
    if len(ids) < n_splits:
        raise ValueError(f"{len(ids)} training cases cannot make {n_splits} folds; nnU-Net-style cross-validation "
                         f"needs at least {n_splits} cases (train fold 'all' instead)")
    kf = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [Split(tuple(ids[i] for i in tr), tuple(ids[i] for i in va)) for tr, va in kf.split(ids)]


def load_splits(path: Path) -> list[Split]:
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of {{'train': [...], 'val': [...]}} objects")
    return [from_jsonable(Split, d, where=f"{path}[{i}]") for i, d in enumerate(data)]


def check_splits(path: Path, case_ids: Sequence[str]) -> list[Split]:
    """Loads a splits file and checks that every fold names only the given cases (which also keeps a case id
    such as ``../x`` from pointing outside the data folder).

    Raises:
        ValueError: naming the file, the fold and the unknown cases.
    """
    known = set(case_ids)
    splits = load_splits(path)
    for i, s in enumerate(splits):
        unknown = sorted(set(s.train + s.val) - known)
        if unknown:
            raise ValueError(f"{path}: fold {i} names case(s) {unknown[:5]} that are not training cases; "
                             "fix or delete the file")
    return splits


def splits_source(preprocessed_dataset: Path, raw_dataset: Path) -> Path | None:
    """The splits file :func:`ensure_splits` will use: the preprocessed one, else the user's in the raw folder."""
    for path in (preprocessed_dataset / SPLITS_FILE, raw_dataset / SPLITS_FILE):
        if path.is_file():
            return path
    return None


def ensure_splits(preprocessed_dataset: Path, raw_dataset: Path, case_ids: Sequence[str]) -> Path | None:
    """Writes ``splits_final.json`` next to the preprocessed data unless one exists; returns its path.

    A file in the raw dataset folder wins (copied once); an existing one is checked against the case ids (before
    anything is written). With fewer than 5 cases no split is written (None): only fold ``all`` can be trained.
    """
    target = preprocessed_dataset / SPLITS_FILE
    source = splits_source(preprocessed_dataset, raw_dataset)
    if source is not None:
        check_splits(source, case_ids)
        if source != target:
            preprocessed_dataset.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            logger.info("using the user-supplied %s", source)
        return target
    if len(case_ids) < N_SPLITS:
        logger.warning("only %d training cases: no %d-fold splits written; train fold 'all'", len(case_ids), N_SPLITS)
        return None
    write_json_atomic(target, make_splits(case_ids))
    return target
