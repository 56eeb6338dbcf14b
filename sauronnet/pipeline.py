"""The pipeline's stages as typed functions: what the commands run, callable from Python (and the tests).

``sauronnet.cli`` only parses arguments, calls these and prints; nothing here prints a command's result. Like the
command line, this module imports ``planners`` and ``trainers`` lazily: the mechanisms under ``sauronnet/``
never depend on the policy packages at import time.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from sauronnet.dataset import DatasetError
from sauronnet.paths import Paths
from sauronnet.plans import Plans

logger = logging.getLogger(__name__)

#: --init-from starts from a trained model, so training ends once pruning has: every threshold at tau-max and no
#: channel removed for this many epochs (a new random reference each epoch still finds redundant channels at
#: tau-max for a while; 10 epochs without any is where the curves in benchmarks/sauron_compression.py flatten).
INIT_FROM_STOP_AFTER = 10


# ---- plan and preprocess ---------------------------------------------------------------------------------------
@dataclass
class PlanningResult:
    """What :func:`plan_and_preprocess` wrote: the plans, their file, and per preprocessed configuration its folder
    and number of cases."""

    dataset: str
    plans: Plans
    plans_path: Path
    preprocessed: dict[str, tuple[Path, int]] = field(default_factory=dict)
    seconds: float = 0.0


def model_plans_file(path: str | Path) -> Path:
    """The plans.json of a model folder (``MODEL_DIR/plans.json`` or ``MODEL_DIR/fold_F/plans.json``) or a file."""
    path = Path(path)
    candidates = [path] if path.is_file() else [path / "plans.json", *sorted(path.glob("fold_*/plans.json"))]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{path}: no plans.json (give a model folder, one of its fold_F folders, or a "
                                "plans.json file)")
    return found


def plans_for_dataset(dataset, name: str, source: str | Path) -> Plans:
    """A model's plans, checked against the dataset they will preprocess and renamed after it."""
    path = model_plans_file(source)
    plans = Plans.load(path)
    if len(plans.channel_names) != len(dataset.channel_names) or plans.labels != dataset.labels:
        raise ValueError(f"{path}: the model expects channels {list(plans.channel_names)} and labels {plans.labels},"
                         f" but {dataset.folder / 'dataset.json'} declares {list(dataset.channel_names)} and "
                         f"{dataset.labels}; use a model trained for this kind of data")
    return replace(plans, dataset_name=name)


def plan_and_preprocess(paths: Paths, task: str, preset: str = "nnunet", configurations: Sequence[str] = ("3d_fullres",),
                        num_processes: int = 1, verify: bool = False, plans_from: str | Path | None = None,
                        plan_only: bool = False, progress: bool = True) -> PlanningResult:
    """Checks a raw dataset, fingerprints it, plans it (or takes a model's plans) and preprocesses it.

    Args:
        task: dataset id or folder name under ``paths.raw``.
        preset: planner name (``planners.PLANNERS``), unless ``plans_from`` gives a model's plans.
        configurations: configurations to preprocess (``"all"``: every planned one).
        verify: read and check every file (test images too) before anything else.

    Raises:
        DatasetError: every problem found in the dataset (nothing is written).
        FileNotFoundError, ValueError: a missing dataset, bad plans or splits (nothing is written).
    """
    from planners import PLANNERS
    from sauronnet.data.splits import check_splits, ensure_splits, splits_source
    from sauronnet.dataset import load_raw_dataset, verify_dataset
    from sauronnet.fingerprint import extract_fingerprint
    from sauronnet.preprocessing.preprocess import config_folder, preprocess_dataset
    from sauronnet.serialization import write_json_atomic

    t0 = time.perf_counter()
    name = paths.dataset_name(task)
    raw = paths.raw / name
    dataset = load_raw_dataset(raw)
    if verify:
        problems = verify_dataset(dataset, num_processes, progress)
        if problems:
            raise DatasetError(problems)
        logger.info("%s: %d training and %d test cases verified", name, len(dataset.training), len(dataset.test))
    given = plans_for_dataset(dataset, name, plans_from) if plans_from else None
    fingerprint = extract_fingerprint(dataset, num_processes, progress)
    plans = given or PLANNERS[preset]().plan(dataset, fingerprint)
    wanted = list(plans.configurations) if "all" in configurations else list(configurations)
    for c in wanted:
        plans.configuration(c)
    out = paths.preprocessed / name
    case_ids = [c.case_id for c in dataset.training]
    if (splits := splits_source(out, raw)) is not None:
        check_splits(splits, case_ids)  # before anything is written
    write_json_atomic(out / "dataset_fingerprint.json", fingerprint)
    shutil.copyfile(raw / "dataset.json", out / "dataset.json")
    plans_path = out / plans.preset / "plans.json"
    plans.save(plans_path)
    ensure_splits(out, raw, case_ids)
    result = PlanningResult(name, plans, plans_path)
    if not plan_only:
        for c in wanted:
            folder = config_folder(out, plans.preset, c)
            ids = preprocess_dataset(dataset, plans, c, folder, num_processes, progress)
            result.preprocessed[c] = (folder, len(ids))
    result.seconds = time.perf_counter() - t0
    return result


# ---- training ----------------------------------------------------------------------------------------------------
def pick_preset(paths: Paths, dataset: str, preset: str | None) -> str:
    """The preset to train: the one given, else the only one planned, else ``nnunet``."""
    folder = paths.preprocessed / dataset
    found = sorted(p.parent.name for p in folder.glob("*/plans.json"))
    if preset:
        if preset not in found:
            raise FileNotFoundError(f"{folder / preset / 'plans.json'} not found; run sauron_plan_and_preprocess -d "
                                    f"{dataset} --preset {preset} (planned presets: {found or 'none'})")
        return preset
    if not found:
        raise FileNotFoundError(f"{folder}: no plans; run sauron_plan_and_preprocess -d {dataset} first")
    if len(found) > 1:
        choice = "nnunet" if "nnunet" in found else found[0]
        logger.info("several presets planned (%s); using %s (choose with -p)", ", ".join(found), choice)
        return choice
    return found[0]


def init_checkpoint(path: Path, fold: str) -> Path:
    """The checkpoint ``--init-from`` names: a file, ``DIR/fold_FOLD``'s, ``DIR``'s only fold's, or ``DIR``'s own."""
    path = Path(path)
    if path.is_file():
        return path
    name = "checkpoint_final.pth"
    folds = sorted(path.glob(f"fold_*/{name}"))
    for candidate in (path / f"fold_{fold}" / name, path / name):
        if candidate.is_file():
            return candidate
    if len(folds) == 1:
        return folds[0]
    if not folds:
        raise FileNotFoundError(f"--init-from {path}: no {name} (give a model folder made by sauron_train or "
                                "sauron_import_nnunet, or a checkpoint file)")
    raise ValueError(f"--init-from {path}: no fold_{fold}, and several folds to choose from "
                     f"({[f.parent.name for f in folds]}); name the checkpoint file")


@dataclass
class TrainingSetup:
    """A trainer ready to ``fit``, with what it was built from."""

    trainer: Any
    dataset: str
    preset: str
    init_from: Path | None


def build_trainer(paths: Paths, task: str, fold: str, trainer: str = "SauronTrainer", preset: str | None = None,
                  configuration: str = "3d_fullres", overrides: Mapping[str, Any] | None = None,
                  init_from: str | Path | None = None, device: Any = "cpu", world: Any = None) -> TrainingSetup:
    """Resolves the dataset, preset, plans and ``--init-from`` checkpoint, and builds the trainer.

    Args:
        trainer: a name of ``trainers.TRAINERS``.
        overrides: fields of the trainer's config (None values are ignored); with ``init_from`` a Sauron-style
            trainer stops ``INIT_FROM_STOP_AFTER`` epochs after pruning has finished unless ``stop_after`` is given.
        device: ``cpu``, ``cuda`` or a ``torch.device`` (a distributed rank's).
        world: a :class:`sauronnet.distributed.World` (default: one process).

    Raises:
        FileNotFoundError, ValueError: naming what is missing or wrong and the command that fixes it.
    """
    from trainers import TRAINERS
    from trainers.base import with_overrides

    cls = TRAINERS[trainer]
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    name = paths.dataset_name(task)
    init = init_checkpoint(Path(init_from), fold) if init_from else None
    if init is not None and preset is None:
        preset = Plans.load(model_plans_file(init.parent)).preset
        if not (paths.preprocessed / name / preset / "plans.json").is_file():
            raise FileNotFoundError(f"{paths.preprocessed / name / preset}: {name} is not preprocessed with the plans "
                                    f"of {init.parent}; run sauron_plan_and_preprocess -d {name} --plans {init.parent}")
    preset = pick_preset(paths, name, preset)
    plans = Plans.load(paths.preprocessed / name / preset / "plans.json")
    if init is not None and "stop_after" in cls.config_class.__dataclass_fields__:
        overrides.setdefault("stop_after", INIT_FROM_STOP_AFTER)
    config = with_overrides(cls.config_class(), **overrides)
    return TrainingSetup(cls(plans, configuration, fold, paths, config, device, world), name, preset, init)
