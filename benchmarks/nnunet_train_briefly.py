"""Trains a real nnU-Net v2 model for a few iterations and saves it in nnU-Net's own checkpoint format.

Run it with the peer venv's python (nnunetv2 importable), after ``nnUNetv2_plan_and_preprocess``, with the
``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` variables set::

    .bench-venv/bin/python benchmarks/nnunet_train_briefly.py DATASET_ID CONFIG FOLD [--iters 20] [--base-width 4]

It builds ``nnUNetTrainer`` exactly as ``nnUNetv2_train`` does, shortens the schedule to one epoch of
``--iters`` iterations (plus one validation iteration) and calls its ``run_training``; the result is
``nnUNet_results/DatasetXXX/nnUNetTrainer__nnUNetPlans__CONFIG/fold_F/checkpoint_final.pth`` next to the
``plans.json``/``dataset.json``/``dataset_fingerprint.json`` copies nnU-Net writes — a genuine nnU-Net model
folder, only barely trained. ``--base-width B`` first rewrites ``features_per_stage`` in the preprocessed plans
to B·2^stage (a smaller network for test fixtures; nnU-Net builds the network from the plans, so it stays
nnU-Net's own).
Data augmentation runs in this process (``nnUNet_n_proc_DA=0``) to keep the run small and deterministic enough.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_id", type=int)
    parser.add_argument("configuration")
    parser.add_argument("fold", help="0-4 or all")
    parser.add_argument("--iters", type=int, default=20, help="training iterations")
    parser.add_argument("--base-width", type=int, help="replace the plans' features_per_stage by B·2^stage")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ["nnUNet_n_proc_DA"] = "0"

    import numpy as np
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    name = maybe_convert_to_dataset_name(args.dataset_id)
    plans_file = os.path.join(nnUNet_preprocessed, name, "nnUNetPlans.json")
    plans = load_json(plans_file)
    if args.base_width:
        arch = plans["configurations"][args.configuration]["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [args.base_width * 2 ** i for i in range(arch["n_stages"])]
        save_json(plans, plans_file, sort_keys=False)
    plans["continue_training"] = False  # what nnunetv2.run.run_training adds before building the trainer
    fold = args.fold if args.fold == "all" else int(args.fold)
    dataset_json = load_json(os.path.join(nnUNet_preprocessed, name, "dataset.json"))
    trainer = nnUNetTrainer(plans, args.configuration, fold, dataset_json, torch.device("cpu"))
    trainer.num_epochs = 1
    trainer.num_iterations_per_epoch = args.iters
    trainer.num_val_iterations_per_epoch = 1
    trainer.run_training()
    print(trainer.output_folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
