"""Where a training step's time goes, at a pruned model's widths against its plan's unpruned widths.

Usage::

    .venv/bin/python benchmarks/step_phases.py MODEL_DIR --preprocessed DIR [--fold all] [--threads 2]
        [--precision fp32|bf16] [--steps 10] [--warmup 2]

``MODEL_DIR`` is a trained model folder (``TRAINER__PRESET__CONFIGURATION``), usually a Sauron-pruned one, and
``--preprocessed`` the preprocessed root it was trained from (the trainer reads its split there). Both
networks train on the same random batch of the plan's patch and batch size (``Trainer.train_step``'s work,
split into forward, loss, backward, gradient clipping and the SGD update); the two widths alternate, and each
phase's mean over ``--steps`` steps after ``--warmup`` is printed with the forward FLOPs, so a reader sees how
much of a FLOP cut each phase turns into time (issue 10: "last epoch ≤ 0.5× the first").
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("forward", "loss", "backward", "clip", "sgd")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--preprocessed", type=Path, required=True, help="the preprocessed root (SAURON_PREPROCESSED)")
    parser.add_argument("--fold", default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from benchmarks.common import cpu_model
    from sauronnet.checkpoint import load_checkpoint
    from sauronnet.paths import Paths
    from sauronnet.plans import Plans
    from sauronnet.pruning.targets import forward_flops
    from trainers.base import Trainer, TrainerConfig

    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.model / f"fold_{args.fold}" / "checkpoint_final.pth")
    plans = Plans.load(args.model / f"fold_{args.fold}" / "plans.json")
    with tempfile.TemporaryDirectory() as tmp:
        t = Trainer(plans, ckpt["configuration"], args.fold, Paths(Path(tmp), args.preprocessed, Path(tmp)),
                    TrainerConfig(num_workers=0, precision=args.precision), "cpu")
        cfg = t.cfg
        rng = np.random.RandomState(0)
        data = torch.from_numpy(rng.randn(cfg.batch_size, 1, *cfg.patch_size).astype(np.float32))
        target = torch.from_numpy(rng.randint(0, len(t.labels) + 1, (cfg.batch_size, 1, *cfg.patch_size))
                                  .astype(np.float32))
        widths = {"unpruned": None, "pruned": ckpt["widths"]}
        networks = {name: t.build_network(w) for name, w in widths.items()}
        times = {name: np.zeros(len(PHASES)) for name in networks}
        flops = {name: forward_flops(cfg.network, len(plans.channel_names), plans.num_classes, w, cfg.patch_size)
                 for name, w in widths.items()}
        for i in range(args.warmup + args.steps):
            for name, net in networks.items():
                t.network = t._place(net)
                t.optimizer = t.configure_optimizers()
                t.network.train()
                c = [time.perf_counter()]
                t.optimizer.zero_grad(set_to_none=True)
                outputs = t._forward(data, t.training_model())
                c.append(time.perf_counter())
                loss = t.compute_loss(outputs, target)
                c.append(time.perf_counter())
                loss.backward()
                c.append(time.perf_counter())
                torch.nn.utils.clip_grad_norm_(t.network.parameters(), t.config.grad_clip)
                c.append(time.perf_counter())
                t.optimizer.step()
                c.append(time.perf_counter())
                if i >= args.warmup:
                    times[name] += np.diff(c) / args.steps
    print(f"training step by phase, {args.model.name}: patch {list(cfg.patch_size)}, batch {cfg.batch_size}, "
          f"{args.precision}, {args.threads} threads, mean of {args.steps} steps after {args.warmup}; CPU: "
          f"{cpu_model()}")
    print("| widths | fwd GFLOP | " + " | ".join(f"{p} ms" for p in PHASES) + " | total ms |")
    print("|---|---|" + "---|" * (len(PHASES) + 1))
    for name, ms in times.items():
        print(f"| {name} | {flops[name] / 1e9:.3f} | " + " | ".join(f"{1e3 * v:.1f}" for v in ms)
              + f" | {1e3 * ms.sum():.1f} |")
    u, p = times["unpruned"], times["pruned"]
    print("| pruned / unpruned | " + f"{flops['pruned'] / flops['unpruned']:.2f} | "
          + " | ".join(f"{b / a:.2f}" for a, b in zip(u, p)) + f" | {p.sum() / u.sum():.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
