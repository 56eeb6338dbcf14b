"""One full training step, SauronNet's ``Trainer.train_step`` vs nnU-Net v2's ``nnUNetTrainer.train_step``.

Usage::

    .venv/bin/python benchmarks/train_step_vs_nnunet.py [--threads 2] [--steps 5] [--warmup 2]
        [--precision auto|fp32|bf16] [--trainer Trainer|SauronTrainer]

Both sides use nnU-Net's own plan for the 10-case ~64³ toy set (patch 64×80×64, batch 2, widths 32…320,
5 stages): forward, deep-supervision Dice+CE loss, backward, gradient clipping 12, SGD-Nesterov step, on the
same random batch. Each side runs in its own long-lived process (nnU-Net from ``.bench-venv``) with the same
number of torch threads; the orchestrator asks them for one step at a time, alternating (ours, nnU-Net, ours,
...), and reports the medians and their ratio (goal: ≤ 1.0; issue 11: ≤ 0.5). `--precision` is our trainer's;
``--trainer SauronTrainer`` times our step with Sauron's clustering term (δ_opt on every prunable layer).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (BENCH_VENV, CACHE, OUR_BIN, cpu_model, nnunet_bin, run_measured, threads_env,  # noqa: E402,E501
                               nnunet_env, toy64_spec, write_rows)

OURS = r'''
import json, sys, numpy as np, torch
from sauronnet.paths import Paths
from sauronnet.plans import Plans
from trainers.base import Trainer, TrainerConfig
from trainers.sauron import SauronConfig, SauronTrainer
torch.set_num_threads(int(sys.argv[1]))
paths = Paths.under(sys.argv[2])
plans = Plans.load(paths.preprocessed / "Dataset002_Toy64" / "nnunet" / "plans.json")
trainer, config = {"Trainer": (Trainer, TrainerConfig), "SauronTrainer": (SauronTrainer, SauronConfig)}[sys.argv[4]]
t = trainer(plans, "3d_fullres", "0", paths, config(num_workers=0, precision=sys.argv[3]), "cpu")
cfg = t.cfg
rng = np.random.RandomState(0)
batch = {"data": rng.randn(cfg.batch_size, 1, *cfg.patch_size).astype(np.float32),
         "seg": rng.randint(0, 3, (cfg.batch_size, 1, *cfg.patch_size)).astype(np.float32)}
t.network.train()
print(json.dumps({"patch": list(cfg.patch_size), "batch": cfg.batch_size, "precision": t.precision,
                  "widths": list(cfg.network.features_per_stage)}), flush=True)
import time
for line in sys.stdin:
    t0 = time.perf_counter()
    t.train_step(batch)
    print(time.perf_counter() - t0, flush=True)
'''

THEIRS = r'''
import json, sys, time, numpy as np, torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
torch.set_num_threads(int(sys.argv[1]))
pre = sys.argv[2] + "/Dataset002_Toy64"
plans = load_json(pre + "/nnUNetPlans.json")
plans["continue_training"] = False  # what nnunetv2.run.run_training adds before building the trainer
t = nnUNetTrainer(plans, "3d_fullres", 0, load_json(pre + "/dataset.json"), torch.device("cpu"))
t.initialize()
cm = t.configuration_manager
patch, bs = list(cm.patch_size), cm.batch_size
rng = np.random.RandomState(0)
data = torch.from_numpy(rng.randn(bs, 1, *patch).astype(np.float32))
seg = torch.from_numpy(rng.randint(0, 3, (bs, 1, *patch)).astype(np.float32))
scales = t._get_deep_supervision_scales()
targets = [torch.nn.functional.interpolate(seg, size=[round(p * s) for p, s in zip(patch, sc)], mode="nearest")
           for sc in scales]
t.network.train()
print(json.dumps({"patch": patch, "batch": bs, "widths": list(cm.network_arch_init_kwargs["features_per_stage"])}),
      flush=True)
for line in sys.stdin:
    t0 = time.perf_counter()
    t.train_step({"data": data, "target": targets})
    print(time.perf_counter() - t0, flush=True)
'''


def read_value(proc: subprocess.Popen):
    """The next JSON value the worker prints (nnU-Net prints its own messages on stdout too)."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker exited early")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue


def prepare() -> tuple[Path, Path]:
    """The toy set planned by both tools (nnU-Net's preprocessing is needed for its trainer's set-up)."""
    from sauronnet.demo import write_demo_dataset
    root = CACHE / "train_step"
    raw = write_demo_dataset(root / "raw", toy64_spec(), overwrite=True)
    env = {"SAURON_RAW": str(raw.parent), "SAURON_PREPROCESSED": str(root / "preprocessed"),
           "SAURON_RESULTS": str(root / "results")}
    run_measured([OUR_BIN / "sauron_plan_and_preprocess", "-d", "2", "--preset", "nnunet", "--no-progress"], env)
    run_measured([nnunet_bin("nnUNetv2_plan_and_preprocess"), "-d", "2", "-c", "3d_fullres", "-np", "2"],
                 nnunet_env(root))
    return root, root / "nnunet_preprocessed"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="our trainer's precision (auto: fp32 on the CPU; bf16 needs native bfloat16)")
    parser.add_argument("--trainer", default="Trainer", choices=["Trainer", "SauronTrainer"],
                        help="our side's trainer (SauronTrainer: the step with the clustering term)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON (used by make bench)")
    args = parser.parse_args(argv)
    if nnunet_bin("nnUNetv2_plan_and_preprocess") is None:
        raise SystemExit("nnU-Net v2 not found in .bench-venv")
    root, nn_pre = prepare()
    env = {**os.environ, **threads_env(args.threads), **nnunet_env(root)}
    with tempfile.TemporaryDirectory():
        procs = {
            "sauron": subprocess.Popen([OUR_BIN / "python", "-c", OURS, str(args.threads), str(root),
                                        args.precision, args.trainer], env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True),
            "nnunet": subprocess.Popen([BENCH_VENV / "bin" / "python", "-c", THEIRS, str(args.threads),
                                        str(nn_pre)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True),
        }
        setup = {k: read_value(p) for k, p in procs.items()}
        times = {k: [] for k in procs}
        for i in range(args.warmup + args.steps):
            for k, p in procs.items():
                p.stdin.write("step\n")
                p.stdin.flush()
                dt = float(read_value(p))
                if i >= args.warmup:
                    times[k].append(dt)
        for p in procs.values():
            p.stdin.close()
            p.wait()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"training step (forward, DS loss, backward, clip, SGD), nnU-Net's 3d_fullres plan of the toy set: "
          f"patch {setup['nnunet']['patch']}, batch {setup['nnunet']['batch']}, widths {setup['nnunet']['widths']}"
          f" (ours: patch {setup['sauron']['patch']}, batch {setup['sauron']['batch']}, "
          f"{setup['sauron']['precision']}); {args.threads} threads; "
          f"median of {args.steps} interleaved steps after {args.warmup} warm-up; CPU: {cpu_model()}")
    print(f"| | nnU-Net nnUNetTrainer.train_step | SauronNet {args.trainer}.train_step | ratio |\n|---|---|---|---|")
    print(f"| median step | {med['nnunet']:.2f} s | {med['sauron']:.2f} s | {med['sauron'] / med['nnunet']:.3f} |")
    if args.json:
        write_rows(args.json, [{"benchmark": "training step, nnU-Net's toy plan (patch 64x80x64, batch 2)",
                                "dataset": "toy64", "metric": f"median step ({args.threads} threads, ours "
                                f"{args.trainer} in {setup['sauron']['precision']})", "nnunet": med["nnunet"],
                                "sauron": med["sauron"],
                                "unit": "s", "goal": "<= 0.5"}])
    return 0


if __name__ == "__main__":
    sys.exit(main())
