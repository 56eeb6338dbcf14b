"""Every console entry point. The ONLY module that reads ``os.environ`` and configures logging handlers.

Data roots: ``SAURON_RAW``, ``SAURON_PREPROCESSED``, ``SAURON_RESULTS``; each defaults to
``./sauron_data/{raw,preprocessed,results}``. Entry points are ``main(argv) -> exit status`` functions so tests
call them in-process.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from sauronnet.dataset import DatasetError
from sauronnet.paths import Paths

logger = logging.getLogger("sauronnet")

DEFAULT_ROOT = Path("sauron_data")
ENV_HELP = ("Data roots come from SAURON_RAW, SAURON_PREPROCESSED and SAURON_RESULTS "
            "(defaults: ./sauron_data/raw, ./sauron_data/preprocessed, ./sauron_data/results).")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only where it says something: not for None/False defaults, and not when the help
    text already names its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def paths_from_env() -> Paths:
    """The data roots from the environment, each defaulting under ``./sauron_data``."""
    default = Paths.under(DEFAULT_ROOT)
    return Paths(Path(os.environ.get("SAURON_RAW") or default.raw),
                 Path(os.environ.get("SAURON_PREPROCESSED") or default.preprocessed),
                 Path(os.environ.get("SAURON_RESULTS") or default.results))


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever ``sys.stderr`` is when a record is emitted (a command run in-process, e.g. from a
    notebook or a test, may see stderr replaced between runs)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(verbose: bool, rank: int | None = None) -> None:
    """Log records to stderr; ``rank`` (a distributed run): ranks other than 0 log warnings and errors only,
    each line tagged with its rank."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_sauron", False)), None)
    if handler is None:
        handler = _StderrHandler()
        handler._sauron = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    tag = f"[rank {rank}] " if rank is not None else ""
    handler.setFormatter(logging.Formatter(f"{tag}%(levelname)s %(name)s: %(message)s"))
    level = logging.DEBUG if verbose else logging.INFO
    root.setLevel(level if not rank else max(level, logging.WARNING))


def _default_processes() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _missing_training_install(modules: Sequence[str]) -> str:
    """The modules of ``modules`` that are not installed (a deploy install has no torch), comma-separated."""
    return ", ".join(m for m in modules if importlib.util.find_spec(m) is None)


def _report(problems: Sequence[str]) -> int:
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    print(f"{len(problems)} problem(s) found; nothing was written.", file=sys.stderr)
    return 1


# ---- sauron_plan_and_preprocess ----------------------------------------------------------------------------------
def plan_and_preprocess_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_plan_and_preprocess``: fingerprint, plan and preprocess one or more datasets."""
    from planners import PLANNERS

    parser = argparse.ArgumentParser(
        prog="sauron_plan_and_preprocess",
        description="Checks a raw nnU-Net v2 dataset, extracts its fingerprint (dataset_fingerprint.json), plans "
                    "the configurations (PRESET/plans.json) and preprocesses the training cases into "
                    "SAURON_PREPROCESSED/DatasetXXX_Name/PRESET/CONFIG/. " + ENV_HELP,
        formatter_class=_HelpFormatter)
    parser.add_argument("-d", "--dataset", nargs="+", required=True, metavar="TASK",
                        help="dataset id(s) (1) or folder name(s) (Dataset001_Demo)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=sorted(PLANNERS), default="nnunet",
                        help="nnunet: nnU-Net v2's GPU plans; cpu: same spacing/topology, network and patch sized "
                             "for a CPU workstation (a few GFLOP per training forward)")
    source.add_argument("--plans", metavar="MODEL_DIR|plans.json",
                        help="do not plan: preprocess with the plans of an existing model (e.g. one made by "
                             "sauron_import_nnunet), so that `sauron_train --init-from MODEL_DIR` can fine-tune it; "
                             "the data go to the folder named after those plans' preset")
    parser.add_argument("-c", "--configurations", nargs="+", default=["3d_fullres"], metavar="CONFIG",
                        help="configurations to preprocess (3d_fullres, 2d, 3d_lowres, or 'all'); every "
                             "configuration is planned either way")
    parser.add_argument("-np", "--num-processes", type=int, default=_default_processes(),
                        help="worker processes for fingerprinting and preprocessing")
    parser.add_argument("--verify", action="store_true",
                        help="first read and check every file (training and imagesTs): geometry agreement, "
                             "declared label values, NaN/inf. Training cases are always checked while "
                             "fingerprinting; this adds the test images and stops before any computation")
    parser.add_argument("--plan-only", action="store_true", help="write fingerprint and plans, skip preprocessing")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if missing := _missing_training_install(("sklearn",)):
        return _report([f"{parser.prog} needs the training install (missing: {missing}): pip install 'sauronnet[train]'"])
    _setup_logging(args.verbose)
    if args.num_processes < 1:
        parser.error("-np must be at least 1")
    paths = paths_from_env()
    for task in args.dataset:
        try:
            status = _plan_and_preprocess(paths, task, args)
        except DatasetError as e:
            return _report(e.problems)
        except (FileNotFoundError, ValueError) as e:
            return _report([str(e)])
        if status:
            return status
    return 0


def _plan_and_preprocess(paths: Paths, task: str, args: argparse.Namespace) -> int:
    from sauronnet.pipeline import plan_and_preprocess

    result = plan_and_preprocess(paths, task, args.preset, args.configurations, args.num_processes, args.verify,
                                 args.plans, args.plan_only, not args.no_progress)
    for cname, cfg in result.plans.configurations.items():
        print(f"{result.dataset} [{result.plans.preset}] {cname}: spacing {_fmt(cfg.spacing)}, patch "
              f"{list(cfg.patch_size)}, batch {cfg.batch_size}, {cfg.network.n_stages} stages, widths "
              f"{list(cfg.network.features_per_stage)}, ~{cfg.estimated_forward_gflops:.1f} GFLOP per training forward")
    print(f"plans: {result.plans_path}")
    for c, (folder, n) in result.preprocessed.items():
        print(f"preprocessed {n} cases ({c}) into {folder}")
    print(f"{result.dataset}: done in {result.seconds:.1f} s")
    return 0


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


# ---- sauron_demo_data --------------------------------------------------------------------------------------------
def demo_data_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_demo_data``: writes the built-in synthetic dataset into SAURON_RAW."""
    from sauronnet.demo import DemoSpec, write_demo_dataset

    defaults = DemoSpec()
    parser = argparse.ArgumentParser(
        prog="sauron_demo_data",
        description="Writes the deterministic synthetic demo dataset (MR-like volumes, labels lesion and vessel, "
                    "1x1x2.5 mm voxels, oblique geometry) in nnU-Net v2 raw layout into SAURON_RAW. Test images "
                    "go to imagesTs, their reference labels to labelsTs. " + ENV_HELP,
        formatter_class=_HelpFormatter)
    parser.add_argument("--id", type=int, default=defaults.dataset_id, help="dataset id (DatasetXXX_Demo)")
    parser.add_argument("--train", type=int, default=defaults.n_train, help="training cases")
    parser.add_argument("--test", type=int, default=defaults.n_test, help="test cases")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing demo dataset")
    args = parser.parse_args(argv)
    _setup_logging(False)
    if args.train < 1 or args.test < 0:
        parser.error("--train must be ≥ 1 and --test ≥ 0")
    spec = DemoSpec(dataset_id=args.id, n_train=args.train, n_test=args.test, seed=args.seed)
    try:
        folder = write_demo_dataset(paths_from_env().raw, spec, overwrite=args.overwrite)
    except FileExistsError as e:
        return _report([str(e)])
    print(f"wrote {spec.n_train} training and {spec.n_test} test cases to {folder}")
    return 0


# ---- sauron_train ------------------------------------------------------------------------------------------------
def _resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    return device


def _set_threads(device: str, threads: int | None, processes_per_node: int = 1) -> None:
    import torch
    if device == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // processes_per_node))
    elif threads:
        torch.set_num_threads(threads)


def _add_log_file(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler




def train_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_train TASK FOLD``: trains one fold; ``--continue`` resumes after any interruption."""
    if missing := _missing_training_install(("torch", "batchgenerators")):
        return _report([f"sauron_train needs the training install (missing: {missing}): pip install "
                        "'sauronnet[train]'"])
    from trainers import TRAINERS

    parser = argparse.ArgumentParser(
        prog="sauron_train",
        description="Trains a network on a preprocessed dataset and writes checkpoints, metrics.jsonl, "
                    "progress.png, training.log and validation/summary.json to "
                    "SAURON_RESULTS/DatasetXXX_Name/TRAINER__PRESET__CONFIG/fold_F/. " + ENV_HELP + " Several "
                    "processes (GPUs, nodes) train one model when launched by torchrun: torchrun --nproc_per_node N "
                    "-m sauronnet.train TASK FOLD ...; the plans' batch size is the global batch (README: 'Train on "
                    "several GPUs or nodes').",
        formatter_class=_HelpFormatter)
    parser.add_argument("task", metavar="TASK", help="dataset id (1) or folder name (Dataset001_Demo)")
    parser.add_argument("fold", metavar="FOLD", help="cross-validation fold 0-4, or 'all' (every case)")
    parser.add_argument("-c", "--configuration", default="3d_fullres")
    parser.add_argument("-tr", "--trainer", default=next(iter(TRAINERS)), choices=sorted(TRAINERS),
                        help="trainer class")
    parser.add_argument("-p", "--preset", default=None,
                        help="plans preset (default: the only one planned, else nnunet)")
    parser.add_argument("--epochs", type=int, help="number of epochs (default: the trainer's, 1000)")
    parser.add_argument("--iters", type=int, help="training iterations per epoch (default 250)")
    parser.add_argument("--val-iters", type=int, help="validation iterations per epoch (default 50)")
    parser.add_argument("--seed", type=int, help="seed for initialisation and batch sampling")
    parser.add_argument("--workers", type=int, help="augmentation processes (default: one per two cores)")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="resume from checkpoint_latest.pth of this fold")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete this fold's earlier outputs (a trained model) and train it again from scratch; "
                             "without it (or --continue) a fold that holds checkpoints is left untouched")
    parser.add_argument("--init-from", metavar="MODEL_DIR",
                        help="start from a trained model's weights, e.g. an nnU-Net model converted by "
                             "sauron_import_nnunet (its fold FOLD, or its only fold; or a checkpoint file): with the "
                             "Sauron trainer this fine-tunes and prunes it. The dataset must be preprocessed with "
                             "that model's plans: sauron_plan_and_preprocess -d TASK --plans MODEL_DIR")
    parser.add_argument("--distill", type=float, metavar="W",
                        help="non-paper, with --init-from: add W x KL(start model || network) of the class "
                             "probabilities to the loss, so that the network, while it is fine-tuned or pruned, "
                             "keeps predicting what the trained model predicted (costs one forward pass of the start "
                             "model per step; on the demo set it did not let pruning go further at the same Dice; "
                             "default: off; README: 'A third of the epochs')")
    parser.add_argument("--lr", type=float, help="initial learning rate (default 0.01, nnU-Net's)")
    sauron = parser.add_argument_group("Sauron pruning (SauronTrainer only; defaults are the paper's)")
    sauron.add_argument("--lambda", dest="lam", type=float, help="weight of the clustering term (0.5)")
    sauron.add_argument("--tau0", type=float, help="first pruning threshold (0.001); a high one prunes from the "
                                                   "first epoch on, e.g. to check a set-up quickly")
    sauron.add_argument("--tau-max", type=float, help="largest pruning threshold (0.3)")
    sauron.add_argument("--kappa", type=int, help="threshold steps from 0.001 to tau-max (15)")
    sauron.add_argument("--rho", type=int, help="patience epochs after a threshold step / plateau length (5)")
    sauron.add_argument("--mu", type=float, help="a layer still prunes if it lost >= mu of its channels (0.02)")
    sauron.add_argument("--prune-batches", type=int, help="last training batches of an epoch averaged for "
                                                          "the pruning score (1, the paper's)")
    sauron.add_argument("--score-maps", choices=["raw", "zscore", "minmax"],
                        help="how the pruning score sees each feature map: standardised (zscore, default: as the "
                             "reference network's norm without affine made them), min-max normalised like the "
                             "clustering term (minmax), or raw (the reference code's rule; with our affine "
                             "InstanceNorm it sees each channel's scale and offset). minmax also prunes the "
                             "transposed convolutions and removes far more FLOPs, but alone it erased a thin class in "
                             "every measured run: pair it with --rollback-drop 0.2 (README: 'Two ways to a small "
                             "model')")
    sauron.add_argument("--val-test", choices=["intended", "reference"],
                        help="thresholds wait while the validation loss still reaches new minima (intended, "
                             "default) or ignore it (reference: the paper's code, whose test was always false)")
    sauron.add_argument("--stop-after", type=int, metavar="N",
                        help="non-paper: stop once every threshold has been at tau-max and no channel was removed "
                             "for N epochs, none held by --dice-guard or --rollback-drop (default for --init-from: "
                             "10; otherwise train every epoch)")
    sauron.add_argument("--protect-last-block", action="store_const", const=True, default=None,
                        help="non-paper: never prune the block that feeds the final segmentation head (its few "
                             "full-resolution channels carry each class's evidence)")
    sauron.add_argument("--width-floor", type=float, metavar="F",
                        help="non-paper: no layer is pruned below F (0-1] of its planned width, rounded up, so no "
                             "path of the network narrows to a few channels (default: off, as the paper; README: "
                             "'Two ways to a small model')")
    sauron.add_argument("--min-channels", type=int, metavar="N",
                        help="non-paper: no layer is pruned below N channels (a layer planned narrower keeps its "
                             "width): --width-floor in channels instead of a fraction. A CPU convolution computes "
                             "output channels in blocks (8 with AVX2), so one pruned below 8 runs no faster; the "
                             "network's speed-up shrinks with the floor all the same (sauron_info --speed measures "
                             "it; README: 'Two ways to a small model'; default: off, as the paper)")
    sauron.add_argument("--skip-empty-patience", action="store_const", const=True, default=None,
                        help="non-paper: a threshold step that removes no channel of its layer is followed by no "
                             "patience, so thresholds climb through the empty low part of the grid quickly (for a "
                             "trained model, --init-from)")
    sauron.add_argument("--plateau-iterations", type=int, metavar="N",
                        help="non-paper: the plateau test reads the losses averaged over the last N / --iters "
                             "epochs, so that short epochs see the paper's statistics (its epochs are 250 "
                             "iterations): 250 keeps thresholds from climbing while a short-epoch run still learns "
                             "(default: off, each epoch's own losses, as the paper)")
    sauron.add_argument("--dice-guard", type=float, metavar="MARGIN",
                        help="non-paper: no threshold step and no removal in epochs whose validation pseudo-Dice "
                             "(EMA) lies more than MARGIN below its best (default: off, as the paper)")
    sauron.add_argument("--hold-until-learned", type=float, metavar="DICE",
                        help="non-paper: no threshold step and no removal until every foreground class's validation "
                             "pseudo-Dice (EMA) has reached DICE once, so that no class is learned by an already "
                             "pruned network (a demo-set run learned its vessel class only at epoch ~190, after 92 %% "
                             "of the FLOPs were gone, and lost 0.12 Dice; README: 'Two ways to a small model'). 0.5 suits "
                             "classes the unpruned model segments well; never use more than a class can reach "
                             "(default: off, as the paper)")
    sauron.add_argument("--cluster-epochs", type=int, metavar="N",
                        help="non-paper: for the first N epochs the clustering term acts alone (no threshold step, "
                             "no removal), so that a trained model's feature maps (--init-from) cluster before any is "
                             "removed; on the demo set it did not help, the term made fewer channels removable "
                             "(default 0: prune from the first epoch end, as the paper; README: 'A third of the "
                             "epochs')")
    sauron.add_argument("--rollback-drop", type=float, metavar="D",
                        help="non-paper: undo an epoch end's removals when a class's validation pseudo-Dice then "
                             "falls more than D below its level before them (a class the removals destroyed), and "
                             "prune the layers that lost channels then no further; the last 2 epoch ends then "
                             "remove nothing, so that every removal is checked (default: off, as the paper; make "
                             "demo uses 0.2)")
    sauron.add_argument("--rollback-isolate", action="store_const", const=True, default=None,
                        help="non-paper, with --rollback-drop: a rewind of removals in several layers freezes none "
                             "of them; each then prunes only at epoch ends where no other layer does, so that a "
                             "later rewind finds and freezes the one layer whose removal broke a class (default: "
                             "freeze every layer that lost channels at the undone epoch end)")
    base = parser.add_argument_group(
        "Baselines (L1Trainer, FPGMTrainer, CSGDTrainer, RandomTrainer, ScratchTrainer, UniformTrainer; README: "
        "'Sauron against other pruning methods')")
    base.add_argument("--match", metavar="PRUNED_MODEL",
                      help="a pruned model (folder, fold folder or checkpoint) to match: its forward FLOPs (L1, FPGM, "
                           "C-SGD, Uniform), its removals per epoch and layer (Random), its widths (Scratch)")
    base.add_argument("--keep-flops", type=float, metavar="F",
                      help="instead of --match: keep this fraction of the unpruned forward FLOPs (L1, FPGM, C-SGD, "
                           "Uniform)")
    base.add_argument("--prune-epoch", type=int, metavar="E",
                      help="L1Trainer: the epoch at whose end it prunes once (default 0: right away, for a trained "
                           "model given by --init-from)")
    base.add_argument("--centripetal", type=float, metavar="EPS",
                      help="CSGDTrainer: centripetal strength per step (default: the spread inside each cluster "
                           "shrinks to 1e-3 by the last step)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp64"], default="auto",
                        help="network arithmetic: auto = float16 AMP on CUDA, fp32 on the CPU; bf16 = bfloat16 "
                             "autocast, only on a CPU with native bfloat16 (AMX or AVX512-BF16); the loss and "
                             "Sauron's distances stay float32 (README: 'Speed on the CPU'); fp64 = everything in "
                             "float64 (slow; for checking that two set-ups compute the same training)")
    parser.add_argument("--no-augmentation", dest="augmentation", action="store_false", default=None,
                        help="train on plain patches, without nnU-Net's data augmentation")
    parser.add_argument("--dist-timeout", type=float, metavar="SECONDS", default=None,
                        help="distributed runs: how long a process waits for the others in a collective before it "
                             "stops the run (default 1800; a process that dies is noticed at once on the CPU)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores on CPU)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.fold != "all" and not (args.fold.isdigit() and 0 <= int(args.fold) <= 4):
        parser.error(f"FOLD must be 0-4 or 'all', got {args.fold!r}")
    for flag in ("epochs", "iters", "val_iters", "workers", "threads", "dist_timeout"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "workers" else 1):
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    if args.lr is not None and args.lr <= 0:
        parser.error("--lr must be positive")
    if args.distill is not None and args.distill < 0:
        parser.error("--distill must be 0 or more")
    if args.distill and not args.init_from:
        parser.error("--distill keeps the network close to the trained model it starts from: give it with "
                     "--init-from MODEL_DIR")
    paths = paths_from_env()
    flags = {k: getattr(args, k) for k in ("lam", "tau0", "tau_max", "kappa", "rho", "mu", "prune_batches",
                                           "score_maps", "val_test", "stop_after", "dice_guard",
                                           "hold_until_learned", "cluster_epochs", "rollback_drop", "rollback_isolate",
                                           "protect_last_block", "width_floor", "min_channels",
                                           "skip_empty_patience",
                                           "plateau_iterations", "match", "keep_flops", "prune_epoch", "centripetal")}
    cls = TRAINERS[args.trainer]
    if unknown := [k for k, v in flags.items() if v is not None and k not in cls.config_class.__dataclass_fields__]:
        owners = {k: sorted(n for n, c in TRAINERS.items() if k in c.config_class.__dataclass_fields__)
                  for k in unknown}
        parser.error("; ".join(f"--{k.replace('_', '-')} applies to {', '.join(v)}, not {cls.name}"
                               for k, v in owners.items()))
    from sauronnet import distributed

    try:
        world = distributed.world_from_env(os.environ)
    except ValueError as e:
        return _report([str(e)])
    code = _train_in_world(args, paths, flags, cls, world)
    if world.distributed:
        distributed.leave(code)  # without gloo's teardown at interpreter exit (see there)
    return code


def _train_in_world(args: argparse.Namespace, paths: Paths, flags: dict, cls, world) -> int:
    """``sauron_train``'s work in this process once the command line is checked: one process, or one rank."""
    from sauronnet import distributed

    if world.distributed:
        _setup_logging(args.verbose, world.rank)
    try:
        from sauronnet.pipeline import build_trainer

        device = _resolve_device(args.device)
        _set_threads(device, args.threads, world.local_size)
        run_device = distributed.start(world, device, args.dist_timeout or distributed.DEFAULT_TIMEOUT_S)
        setup = build_trainer(paths, args.task, args.fold, args.trainer, args.preset, args.configuration,
                              dict(flags, epochs=args.epochs, iterations_per_epoch=args.iters,
                                   val_iterations=args.val_iters, seed=args.seed, num_workers=args.workers,
                                   initial_lr=args.lr, precision=args.precision, augmentation=args.augmentation,
                                   distill=args.distill),
                              args.init_from, run_device, world)
        trainer, name, preset, init = setup.trainer, setup.dataset, setup.preset, setup.init_from
    except (FileNotFoundError, ValueError) as e:
        distributed.stop()
        return _report([str(e)])
    from sauronnet.atomic import exclusive_lock
    try:
        if not world.is_main:
            return _train_unlocked(args, trainer, cls, name, preset, device, init)
        with exclusive_lock(trainer.output_dir, "training this fold"):
            return _train_unlocked(args, trainer, cls, name, preset, device, init)
    except ValueError as e:
        return _report([str(e)])
    finally:
        distributed.stop()


def _check_fold_folder(args: argparse.Namespace, trainer) -> str | None:
    """Rank 0's verdict on the fold folder before training: an error message, or None to go on (after
    ``--overwrite`` emptied it)."""
    from sauronnet.checkpoint import load_checkpoint

    earlier = sorted(p.name for p in trainer.output_dir.glob("checkpoint_*.pth"))
    latest = trainer.output_dir / "checkpoint_latest.pth"
    if args.resume and latest.is_file():
        try:
            load_checkpoint(latest)  # a damaged file is reported before anything is written
        except ValueError as e:
            return f"{e}; or start again with --overwrite"
    if earlier and not args.resume:
        if not args.overwrite:
            return (f"{trainer.output_dir} already holds a model ({', '.join(earlier)}); pass --continue to resume "
                    "it, or --overwrite to delete it and train again from scratch")
        logger.warning("--overwrite: deleting the contents of %s", trainer.output_dir)
        for entry in trainer.output_dir.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return None


def _train_unlocked(args: argparse.Namespace, trainer, cls, name: str, preset: str, device: str, init) -> int:
    from sauronnet.distributed import DistributedRunError

    world = trainer.world
    # rank 0 alone looks at (and may empty) the fold folder; every rank follows its verdict
    if problem := world.broadcast(_check_fold_folder(args, trainer) if world.is_main else None):
        return _report([problem]) if world.is_main else 1
    handler = _add_log_file(trainer.output_dir / "training.log") if world.is_main else None
    try:
        processes = f" x {world.size} processes" if world.distributed else ""
        logger.info("training %s fold %s: %s (%s, %s) on %s%s in %s, %d training / %d validation cases", name,
                    args.fold, cls.name, preset, args.configuration, device, processes, trainer.precision,
                    len(trainer.train_ids), len(trainer.val_ids))
        t0 = time.perf_counter()
        summary = trainer.fit(resume=args.resume, progress=not args.no_progress, init_from=init)
    except (FileNotFoundError, ValueError) as e:
        return _report([str(e)])
    except DistributedRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    if not world.is_main:
        return 0
    dice = ", ".join(f"{k}: {v:.4f}" for k, v in summary["mean_dice"].items())
    print(f"{name} fold {args.fold}: {cls.name} trained {trainer.epoch} epochs in {time.perf_counter() - t0:.0f} s; "
          f"validation Dice {dice} (mean {summary['foreground_mean_dice']:.4f})")
    if "pruning" in summary:
        p = summary["pruning"]
        print(f"pruning: parameters {p['parameters_before']:,} -> {p['parameters_after']:,} "
              f"(-{100 * p['parameters_removed_fraction']:.1f} %), forward FLOPs {p['flops_before'] / 1e9:.3f} -> "
              f"{p['flops_after'] / 1e9:.3f} GFLOP (-{100 * p['flops_removed_fraction']:.1f} %)")
        for warning in p["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    print(f"model: {trainer.output_dir}")
    return 0


# ---- sauron_predict ----------------------------------------------------------------------------------------------
def _model_dir(paths: Paths, args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    name = paths.dataset_name(args.dataset)
    base = paths.results / name
    pattern = f"{args.trainer or '*'}__{args.preset or '*'}__{args.configuration}"
    found = sorted(p for p in base.glob(pattern) if p.is_dir())
    if not found:
        raise FileNotFoundError(f"{base}: no trained model matching {pattern}; train one with sauron_train")
    if len(found) > 1:
        raise ValueError(f"several models match {pattern} in {base}: {[p.name for p in found]}; choose with -tr/-p "
                         "or -m MODEL_DIR")
    return found[0]


def _auto_backend() -> str:
    """torch where it is installed, onnxruntime elsewhere. Measured here (2 threads): onnxruntime's call on one tile was
    ~10 % faster in isolation but 1.5x slower inside the sliding window (49 against 33 ms per tile, its thread pool
    spinning against the tiling), and a 512x512x300 volume took 349 s in onnxruntime against 296 s in torch; it only
    won on small cases (0.85-0.89x), where torch's 2.4 s import dominates (benchmarks/deploy.py)."""
    return "torch" if importlib.util.find_spec("torch") is not None else "onnxruntime"


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_predict -i IN -o OUT``: segments images with a trained (pruned or not) model."""
    parser = argparse.ArgumentParser(
        prog="sauron_predict",
        description="Segments images with a trained model. Inputs: a folder in nnU-Net naming (CASE_0000.nii.gz, "
                    "CASE_0001.nii.gz for a second channel...), single image files, or DICOM series folders. Each "
                    "output CASE.ext lies voxel for voxel on its input (same spacing, origin, direction and format; "
                    "DICOM inputs give .nii.gz). " + ENV_HELP,
        formatter_class=_HelpFormatter)
    parser.add_argument("-i", "--input", nargs="+", required=True, help="input folder, files or DICOM folders")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help="model folder TRAINER__PRESET__CONFIG (holding fold_F/ subfolders), or a "
                                           "model.sauron bundle written by sauron_export")
    src.add_argument("-d", "--dataset", metavar="TASK", help="find the model under SAURON_RESULTS/TASK")
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="with -d")
    parser.add_argument("-tr", "--trainer", help="with -d: trainer name (if several models exist)")
    parser.add_argument("-p", "--preset", help="with -d: plans preset (if several models exist)")
    parser.add_argument("-f", "--folds", nargs="+", help="folds to ensemble (default: every trained fold)")
    parser.add_argument("--checkpoint", choices=["final", "best", "latest"], default="final")
    parser.add_argument("--step", type=float, default=0.5, help="sliding-window step as a fraction of the patch")
    parser.add_argument("--disable-tta", action="store_true", help="no mirroring (8x faster in 3D)")
    parser.add_argument("--save-probabilities", action="store_true", help="also write CASE.npz (probabilities)")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="skip keep-largest-component (applied by default to the labels whose validation it "
                             "improved in every fold: fold_F/postprocessing.json)")
    parser.add_argument("--continue", dest="resume", action="store_true", help="skip cases already written")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="network arithmetic: auto = bf16 on a CPU with native bfloat16 (AMX or AVX512-BF16), "
                             "fp32 elsewhere and on CUDA; accumulation, softmax and resampling stay float32 "
                             "(README: 'Speed on the CPU')")
    parser.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                        help="what runs the network: torch, or onnxruntime on the ONNX graphs of a bundle exported "
                             "with --onnx (no torch needed: pip install 'sauronnet[deploy]'); auto = torch where it is "
                             "installed (measured faster on large volumes), onnxruntime elsewhere")
    parser.add_argument("--threads", type=int, help="torch / onnxruntime threads (default: all cores on CPU)")
    parser.add_argument("--tile-workers", type=int, metavar="W",
                        help="on the CPU: W network calls (tiles) run side by side, each on one thread, instead of "
                             "every thread working inside each call; the same segmentations (a case of no more calls "
                             "than workers runs them one at a time with every thread). Default: torch on the CPU as many as --threads (measured "
                             "1.0-1.4x faster on volumes of many tiles), otherwise 1 (README: 'Speed on the CPU')")
    parser.add_argument("-np", "--num-processes", type=int, default=1,
                        help="worker processes reading/preprocessing upcoming cases and resampling/writing "
                             "finished ones while the network predicts (1: everything in this process)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.num_processes < 1:
        parser.error("-np must be at least 1")
    if args.tile_workers is not None and args.tile_workers < 1:
        parser.error("--tile-workers must be at least 1")
    out_dir = Path(args.output).resolve()
    for given in args.input:
        if Path(given).is_dir() and Path(given).resolve() == out_dir:
            return _report([f"-o {args.output} is the input folder: predictions would be written among the images "
                            "(and read as images next time); choose another output folder"])
    from sauronnet.inference.inputs import find_cases
    from sauronnet.inference.loading import load_predictor
    from sauronnet.inference.predictor import predict_cases

    try:
        model_dir = _model_dir(paths_from_env(), args)
        backend = args.backend
        if backend == "auto":
            backend = _auto_backend()
        if backend == "onnxruntime":  # torch is never imported on this path
            if args.device == "cuda" or args.precision == "bf16":
                raise ValueError("--backend onnxruntime runs fp32 on the CPU; drop --device cuda / --precision bf16 "
                                 "or use --backend torch")
            device, precision = "cpu", "fp32"
        else:
            from sauronnet.precision import resolve_precision
            device = _resolve_device(args.device)
            _set_threads(device, args.threads)
            precision = resolve_precision(args.precision, device)
        predictor = load_predictor(model_dir, args.folds, args.checkpoint, args.step, not args.disable_tta, device,
                                   not args.no_postprocessing, precision, backend, args.threads or os.cpu_count(),
                                   args.tile_workers)
    except (FileNotFoundError, ValueError) as e:
        return _report([str(e)])
    cases, problems = find_cases(args.input, len(predictor.plans.channel_names))
    t0 = time.perf_counter()
    done, failed = predict_cases(predictor, cases, Path(args.output), args.num_processes, args.resume,
                                 args.save_probabilities, not args.no_progress)
    for p in problems + failed:
        print(f"error: {p}", file=sys.stderr)
    mean = f", {(time.perf_counter() - t0) / done:.2f} s per case" if done else ""
    print(f"predicted {done} case(s) into {args.output} with {len(predictor.networks)} fold(s) of "
          f"{model_dir.name} ({predictor.runtime}){mean}")
    return 1 if problems or failed else 0


# ---- sauron_export -----------------------------------------------------------------------------------------------
def export_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_export MODEL_DIR -o model.sauron``: one file with everything prediction needs."""
    parser = argparse.ArgumentParser(
        prog="sauron_export",
        description="Writes one .sauron file holding everything prediction needs and nothing else: the plans of the "
                    "configuration, labels and channel names, per fold the (pruned) widths and weights "
                    "(safetensors), the postprocessing decisions, mirror axes and score space, with a manifest of "
                    "sha256 hashes checked at load; loading never unpickles. `sauron_predict -m model.sauron` uses "
                    "it wherever a model folder works; with --onnx, `sauron_predict --backend onnxruntime` runs it "
                    "without torch (pip install 'sauronnet[deploy]').",
        formatter_class=_HelpFormatter)
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="trained or imported model folder (holding fold_F/)")
    parser.add_argument("-o", "--output", required=True, help="bundle to write, e.g. model.sauron")
    parser.add_argument("-f", "--folds", nargs="+", help="folds to include (default: every fold with the checkpoint)")
    parser.add_argument("--checkpoint", choices=["final", "best"], default="final")
    parser.add_argument("--onnx", action="store_true",
                        help="also export each fold's network as ONNX (checked against torch at export; needs onnx, "
                             "onnxscript and onnxruntime)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if missing := _missing_training_install(("torch",)):
        return _report([f"{parser.prog} needs the training install (missing: {missing}): pip install 'sauronnet[train]'"])
    _setup_logging(args.verbose)
    out = Path(args.output)
    if out.suffix != ".sauron":
        parser.error(f"-o {out}: a bundle's name ends in .sauron")
    if out.exists() and not args.overwrite:
        return _report([f"{out} exists; pass --overwrite to replace it"])
    try:
        from importlib.metadata import version

        from sauronnet.deploy.export import export_model
        report = export_model(Path(args.model_dir), out, args.folds, args.checkpoint, args.onnx,
                              f"sauronnet {version('sauronnet')}")
    except (FileNotFoundError, ValueError) as e:
        return _report([str(e)])
    except ImportError as e:
        return _report([f"--onnx needs onnx, onnxscript and onnxruntime ({e}); pip install onnx onnxscript "
                        "onnxruntime"])
    for fold, diff in report["onnx_max_abs_diff"].items():
        print(f"fold {fold}: ONNX graph checked; max |logit difference| to torch on random input {diff:.2e}")
    print(f"exported {len(report['folds'])} fold(s) of {args.model_dir} to {out}: {report['bytes'] / 2**20:.2f} MiB "
          f"({report['bytes'] / report['tensor_bytes']:.3f}x the tensors it holds)")
    return 0


# ---- sauron_inspect ---------------------------------------------------------------------------------------------
def inspect_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_inspect MODEL_DIR -i IMAGE -o OUT_DIR``: a case's feature maps per layer and their clustering."""
    parser = argparse.ArgumentParser(
        prog="sauron_inspect",
        description="Runs one case through a trained (pruned or not) 3D model and writes, per prunable layer, "
                    "LAYER.nii.gz (4D: the layer's feature maps as channels, on the input image's grid, so a viewer "
                    "overlays them on it), LAYER.png (the central slice of every channel) and clusters.json: per "
                    "layer the distribution of pairwise distances between the min-max normalised maps (Sauron's "
                    "clustering-term distance), the clusters found at --threshold and their silhouette score. "
                    "Volumes larger than --max-voxels after preprocessing are inspected on the centred "
                    "patch-sized region (zero elsewhere).",
        formatter_class=_HelpFormatter)
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="trained or imported model folder (holding fold_F/)")
    parser.add_argument("-i", "--input", nargs="+", required=True, metavar="IMAGE",
                        help="the case's image, one file per channel in the model's channel order")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder to write")
    parser.add_argument("--layers", nargs="+", metavar="LAYER",
                        help="prunable layers to show, e.g. enc0.0 up3 dec3.1 (default: all; sauron_info lists them)")
    parser.add_argument("-f", "--fold", help="the fold to inspect (default: the model's first trained fold)")
    parser.add_argument("--checkpoint", choices=["final", "best"], default="final")
    parser.add_argument("--threshold", type=float, default=0.1,
                        help="distance below which two maps count as one cluster (complete linkage)")
    parser.add_argument("--max-voxels", type=int, default=4_000_000,
                        help="inspect the whole preprocessed volume up to this size, else the centred patch")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="write into an OUT_DIR that already holds files")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if missing := _missing_training_install(("torch", "matplotlib")):
        return _report([f"{parser.prog} needs the training install (missing: {missing}): pip install 'sauronnet[train]'"])
    _setup_logging(args.verbose)
    if not 0 < args.threshold < 1:
        parser.error("--threshold must lie in (0, 1): distances between min-max normalised maps lie in [0, 1]")
    out = Path(args.output)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        return _report([f"{out} already holds files; pass --overwrite to write into it, or choose another -o"])
    problems = [f"{p}: no such file" for p in args.input if not Path(p).is_file()]
    if not Path(args.model_dir).is_dir():
        problems.append(f"{args.model_dir}: no such model folder")
    if problems:
        return _report(problems)
    _set_threads("cpu", args.threads)
    try:
        from tqdm import tqdm

        from sauronnet.inspection.feature_maps import inspect_case
        from sauronnet.inspection.report import write_inspection
        inspection = inspect_case(args.model_dir, args.input, args.fold, args.checkpoint, args.layers,
                                  args.max_voxels)
        result = write_inspection(
            inspection, out, args.threshold,
            {"model": str(Path(args.model_dir).resolve()), "images": [str(Path(p).resolve()) for p in args.input],
             "fold": args.fold, "checkpoint": args.checkpoint},
            progress=lambda names: tqdm(names, desc="layers", unit="layer", disable=args.no_progress))
    except (FileNotFoundError, ValueError) as e:
        return _report([str(e)])
    s = result["summary"]
    print(f"{len(result['layers'])} layers of {args.model_dir} written to {out}")
    if s.get("layers"):
        sil = "undefined" if s["silhouette"] is None else f"{s['silhouette']:.3f}"
        print(f"mean over layers: pairwise distance {s['mean_distance']:.4f} (median {s['median_distance']:.4f}), "
              f"{s['clusters']:.1f} clusters of {s['channels']:.1f} channels at threshold {args.threshold}, "
              f"silhouette {sil}")
    return 0


# ---- sauron_import_nnunet ---------------------------------------------------------------------------------------
def import_nnunet_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_import_nnunet -m NNUNET_MODEL_FOLDER -o MODEL_DIR``: converts a trained nnU-Net v2 model."""
    parser = argparse.ArgumentParser(
        prog="sauron_import_nnunet",
        description="Converts a trained nnU-Net v2 model (plans.json, dataset.json, dataset_fingerprint.json, "
                    "fold_F/checkpoint_final.pth) into a SauronNet model folder: the plans (spacing, patch, "
                    "transpose, normalisation with the CT statistics, resampling, network topology) and the "
                    "PlainConvUNet weights. Then `sauron_predict -m MODEL_DIR` segments with it and `sauron_train "
                    "TASK FOLD --init-from MODEL_DIR` fine-tunes and prunes it. nnU-Net's checkpoint is read with "
                    "torch.load(weights_only=True): no pickled code runs. ResEnc, cascade and region-based models "
                    "are refused with the reason.",
        formatter_class=_HelpFormatter)
    parser.add_argument("-m", "--model", required=True, metavar="NNUNET_MODEL_FOLDER",
                        help="nnUNet_results/DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL_DIR", help="SauronNet model folder to write")
    parser.add_argument("-f", "--folds", nargs="+", help="folds to import (default: every fold with a checkpoint)")
    parser.add_argument("--checkpoint", choices=["final", "best"], default="final",
                        help="which nnU-Net checkpoint; written under the same name")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing MODEL_DIR")
    args = parser.parse_args(argv)
    if missing := _missing_training_install(("torch",)):
        return _report([f"{parser.prog} needs the training install (missing: {missing}): pip install 'sauronnet[train]'"])
    _setup_logging(False)
    from sauronnet.interop.nnunet import import_nnunet_model

    try:
        result = import_nnunet_model(args.model, args.output, args.folds, args.checkpoint, args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        return _report([str(e)])
    cfg = result.plans.configuration(result.configuration)
    print(f"imported {result.trainer_name} {result.plans.dataset_name} {result.configuration} fold(s) "
          f"{', '.join(result.folds)}: patch {list(cfg.patch_size)}, spacing {_fmt(cfg.spacing)}, widths "
          f"{list(cfg.network.features_per_stage)}, {len(result.plans.labels)} classes")
    print(f"model: {result.model_dir}")
    return 0


# ---- sauron_evaluate ---------------------------------------------------------------------------------------------
def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_evaluate -ref REF -pred PRED``: Dice, IoU, HD95 and volumes per case and class."""
    parser = argparse.ArgumentParser(
        prog="sauron_evaluate",
        description="Compares predicted label maps with reference ones (same file names, same grids) and writes "
                    "summary.json: per case and class Dice, IoU, HD95 (mm), volumes (mm³); means per class. "
                    "Conventions: a class absent from both maps has Dice/IoU/HD95 NaN (left out of means, null in "
                    "JSON); absent from one map only: Dice 0 and HD95 infinite (null in JSON, counted in "
                    "'hd95_infinite').",
        formatter_class=_HelpFormatter)
    parser.add_argument("-ref", "--reference", required=True, help="folder of reference label maps")
    parser.add_argument("-pred", "--prediction", required=True, help="folder of predicted label maps")
    parser.add_argument("-l", "--labels", type=int, nargs="+", help="labels to score (default: all nonzero "
                                                                     "values found in the references)")
    parser.add_argument("-o", "--output", help="summary file (default: PRED/summary.json)")
    args = parser.parse_args(argv)
    _setup_logging(False)
    from sauronnet.evaluation import evaluate_folders

    try:
        summary = evaluate_folders(Path(args.reference), Path(args.prediction), args.labels)
    except (FileNotFoundError, ValueError) as e:
        return _report([str(e)])
    from sauronnet.serialization import write_json_atomic
    out = Path(args.output) if args.output else Path(args.prediction) / "summary.json"
    write_json_atomic(out, summary)
    for label, m in summary["mean"].items():
        print(f"label {label}: Dice {_fmt_metric(m['dice'])}, IoU {_fmt_metric(m['iou'])}, "
              f"HD95 {_fmt_metric(m['hd95'])} mm")
    print(f"mean foreground Dice {_fmt_metric(summary['foreground_mean_dice'])} over {len(summary['cases'])} "
          f"case(s); written to {out}")
    return 0


def _fmt_metric(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


# ---- sauron_info -------------------------------------------------------------------------------------------------
def info_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_info MODEL_DIR``: widths, parameters and FLOPs per layer of a trained (pruned or not) model."""
    parser = argparse.ArgumentParser(
        prog="sauron_info",
        description="Prints, for each fold of a trained model, every prunable layer's width (and the plan's), its "
                    "parameters and forward FLOPs at the plan's patch size (one patch, inference, "
                    "torch.utils.flop_counter), the totals against the unpruned network, and the warnings the "
                    "pruning trainer wrote about the final model (pruning_summary.json: e.g. a class learned only "
                    "after most channels were gone). With --speed also the CPU time of one network call as "
                    "sauron_predict makes it, against the unpruned network's: FLOPs do not predict it for narrow "
                    "layers.",
        formatter_class=_HelpFormatter)
    parser.add_argument("model_dir", help="model folder TRAINER__PRESET__CONFIG, or one of its fold_F folders")
    parser.add_argument("--checkpoint", choices=["final", "best", "latest"], default="final")
    parser.add_argument("--speed", action="store_true",
                        help="also time one network call on this CPU (as many tiles as sauron_predict puts in one "
                             "call, in the model's precision, no TTA), this model's against the unpruned network of its plan, median of "
                             "--repeats interleaved calls")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per network for --speed")
    parser.add_argument("--threads", type=int, help="torch threads for --speed (default: all cores)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if missing := _missing_training_install(("torch",)):
        return _report([f"{parser.prog} needs the training install (missing: {missing}): pip install 'sauronnet[train]'"])
    _setup_logging(False)
    import torch

    from sauronnet.inference.sliding_window import tiles_per_call
    from sauronnet.inference.torch_network import load_fold_network
    from sauronnet.networks.complexity import forward_seconds, measure, unpruned_like
    from sauronnet.networks.unet import default_widths

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir)
    folds = [model_dir] if model_dir.name.startswith("fold_") else sorted(model_dir.glob("fold_*"))
    name = f"checkpoint_{args.checkpoint}.pth"
    ckpts = [f / name for f in folds if (f / name).is_file()]
    if not ckpts:
        return _report([f"{model_dir}: no fold_*/checkpoint_{args.checkpoint}.pth"])
    for path in ckpts:
        try:
            net, plans, configuration = load_fold_network(path, torch.device("cpu"))
        except (FileNotFoundError, ValueError) as e:
            return _report([str(e)])
        patch = plans.configuration(configuration).patch_size
        unpruned = unpruned_like(net)
        now, ref = measure(net, patch), measure(unpruned, patch)
        planned = default_widths(net.plan)
        print(f"{path.parent.name} ({plans.dataset_name}, {configuration}, patch {list(patch)}):")
        print(f"  {'layer':<10}{'width':>12}{'parameters':>14}{'GFLOP':>10}")
        for name, (width, params, flops) in now.layers.items():
            w = f"{width}/{planned[name]}" if name in planned else str(width)
            print(f"  {name:<10}{w:>12}{params:>14,}{flops / 1e9:>10.4f}")
        print(f"  total: parameters {now.parameters:,} of {ref.parameters:,} "
              f"(-{100 * (1 - now.parameters / ref.parameters):.1f} %), FLOPs {now.flops / 1e9:.4f} of "
              f"{ref.flops / 1e9:.4f} GFLOP (-{100 * (1 - now.flops / ref.flops):.1f} %)")
        if args.speed:
            tiles = tiles_per_call(patch)
            print(f"  timing {args.repeats} + 1 calls of each network ...", flush=True)
            mine, full = forward_seconds([net, unpruned], patch, tiles, args.repeats)
            dtype = str(next(net.parameters()).dtype).removeprefix("torch.")
            print(f"  one network call of {tiles} tile(s) on this CPU ({dtype}, {torch.get_num_threads()} thread(s)): "
                  f"{1e3 * mine:.1f} ms against the unpruned network's {1e3 * full:.1f} ms ({full / mine:.2f}x "
                  f"faster; median of {args.repeats})")
        summary = path.parent / "pruning_summary.json"
        if args.checkpoint == "final" and summary.is_file():  # what the pruning trainer said about this model
            for warning in json.loads(summary.read_text()).get("warnings", []):
                print(f"  warning from training: {warning}")
    return 0


#: The demo takes the second of the two ways to a small model (README: "Two ways to a small model"): train the
#: unpruned Trainer, then prune it with SauronTrainer --init-from, the paper's constants plus the non-paper
#: settings in DEMO_NON_PAPER (the report prints them with their reasons). Single-phase pruning from scratch needs
#: the paper's long schedule (hundreds of epochs) to reach the same compression; a ~10-minute demo cannot run it.
DEMO_TRAIN = ["--epochs", "50", "--iters", "12", "--val-iters", "4"]
DEMO_PRUNE = ["--epochs", "150", "--iters", "5", "--val-iters", "4", "--lambda", "0", "--rollback-drop", "0.2"]
#: why the demo's pruning phase departs from the paper, per setting (measured: README "Two ways to a small model")
DEMO_NON_PAPER = {
    "--lambda": "0, no clustering term: pruning this trained demo model, the term (the paper's 0.5) cost Dice and "
                "left more FLOPs in all 3 measured runs; on toy64 it did not (same FLOPs, better vessel Dice), "
                "so sauron_train keeps the paper's 0.5 (README: 'Two ways to a small model')",
    "--rollback-drop": "0.2, undo a removal after which a class stays collapsed: pruning this model lost the lesion "
                       "(pseudo-Dice 0.98 -> 0.0 within one epoch, for good) in 2 of 5 measured runs (other seed, "
                       "bf16-trained start); with it both kept the lesion (test Dice 0.98, 0.99) at 60 / 55 % fewer "
                       "FLOPs, and the 3 runs without a collapse were unchanged (README: 'Quick start')",
}


def demo_main(argv: Sequence[str] | None = None) -> int:
    """``sauron_demo``: the whole pipeline on the synthetic dataset, ending with a report."""
    parser = argparse.ArgumentParser(
        prog="sauron_demo",
        description="Writes the synthetic demo dataset, plans and preprocesses it (cpu preset), trains the unpruned "
                    "Trainer on all training cases, prunes that model with the Sauron trainer (--init-from), "
                    "predicts the held-out test images with both, evaluates them against their reference labels "
                    "and reports Dice, pruning (parameters/FLOPs) and prediction time. " + ENV_HELP,
        formatter_class=_HelpFormatter)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="passed to sauron_train and sauron_predict (see their --help)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if missing := _missing_training_install(("torch", "batchgenerators", "sklearn")):
        return _report([f"{parser.prog} needs the training install (missing: {missing}): pip install 'sauronnet[train]'"])
    quiet = ["--no-progress"] if args.no_progress else []
    precision = ["--precision", args.precision]
    paths = paths_from_env()
    t0 = time.perf_counter()
    dataset = paths.raw / "Dataset001_Demo"
    models = {name: paths.results / "Dataset001_Demo" / f"{name}__cpu__3d_fullres"
              for name in ("Trainer", "SauronTrainer")}
    steps = [
        ("data", demo_data_main, ["--overwrite"]),
        ("plan", plan_and_preprocess_main, ["-d", "1", "--preset", "cpu", "--verify"] + quiet),
        ("train (unpruned)", train_main, ["1", "all", "-tr", "Trainer", "-p", "cpu", "--overwrite"] + DEMO_TRAIN
         + precision + quiet),
        ("prune (Sauron, --init-from the unpruned model)", train_main,
         ["1", "all", "-tr", "SauronTrainer", "-p", "cpu", "--overwrite", "--init-from", str(models["Trainer"])]
         + DEMO_PRUNE + precision + quiet),
    ]
    for name, fn, step_argv in steps:
        print(f"== sauron_demo: {name} ==", flush=True)
        if fn(step_argv) != 0:
            print(f"sauron_demo: step '{name}' failed", file=sys.stderr)
            return 1
    from sauronnet.pipeline import INIT_FROM_STOP_AFTER
    from sauronnet.serialization import read_json
    n_test = len(list((dataset / "imagesTs").iterdir()))
    summary, per_case = {}, {}
    for name, model in models.items():
        out = paths.results / "Dataset001_Demo" / f"demo_test_predictions_{name}"
        print(f"== sauron_demo: predict and evaluate ({name}) ==", flush=True)
        t_pred = time.perf_counter()
        if predict_main(["-i", str(dataset / "imagesTs"), "-o", str(out), "-m", str(model)] + precision + quiet) != 0:
            return 1
        per_case[name] = (time.perf_counter() - t_pred) / max(n_test, 1)
        if evaluate_main(["-ref", str(dataset / "labelsTs"), "-pred", str(out)]) != 0:
            return 1
        summary[name] = read_json(out / "summary.json")
    pruning = read_json(models["SauronTrainer"] / "fold_all" / "pruning_summary.json")
    labels = {v: k for k, v in read_json(dataset / "dataset.json")["labels"].items()}
    base, pruned = summary["Trainer"], summary["SauronTrainer"]
    print("\n== SauronNet demo report ==")
    print(f"  {n_test} held-out test cases              unpruned   pruned by Sauron")
    for label, m in pruned["mean"].items():
        print(f"  test Dice {labels[int(label)]:<28} {base['mean'][label]['dice']:.4f}     {m['dice']:.4f}")
    print(f"  mean foreground Dice                {base['foreground_mean_dice']:.4f}     "
          f"{pruned['foreground_mean_dice']:.4f}")
    print(f"  parameters {pruning['parameters_before']:,} -> {pruning['parameters_after']:,} "
          f"({100 * pruning['parameters_removed_fraction']:.1f} % removed by pruning)")
    print(f"  forward FLOPs per patch {pruning['flops_before'] / 1e9:.3f} -> {pruning['flops_after'] / 1e9:.3f} GFLOP "
          f"({100 * pruning['flops_removed_fraction']:.1f} % removed)")
    print(f"  prediction time per test case (mirroring TTA, start-up included): unpruned {per_case['Trainer']:.2f} s, "
          f"pruned {per_case['SauronTrainer']:.2f} s")
    budget = int(DEMO_PRUNE[DEMO_PRUNE.index("--epochs") + 1])
    stop = (f"--stop-after {INIT_FROM_STOP_AFTER} (the default with --init-from) ended it: every threshold had sat "
            "at tau-max with nothing removed"
            if pruning["epochs_trained"] < budget else
            f"--stop-after {INIT_FROM_STOP_AFTER} (the default with --init-from) would have ended it once every "
            "threshold had sat at tau-max with nothing removed; channels were still being removed when the budget "
            "ran out")
    print(f"  pruning phase: {pruning['epochs_trained']} of {budget} epochs ({' '.join(DEMO_PRUNE)}), the paper's "
          "other constants; non-paper settings:")
    for flag in DEMO_PRUNE:
        if flag in DEMO_NON_PAPER:
            print(f"    {flag} {DEMO_NON_PAPER[flag]}")
    print(f"    {stop}")
    for warning in pruning["warnings"]:
        print(f"  warning: {warning}")
    print(f"  total demo time {time.perf_counter() - t0:.0f} s; models in {models['Trainer'].parent}")
    return 0
