"""How many tiles one network call should take: CPU sliding-window time per case against tiles per call.

Usage::

    .venv/bin/python benchmarks/tile_batch.py MODEL_DIR [MODEL_DIR ...] -i IMAGES_DIR [--batches 1 4 8 16 32]
        [--threads 2] [--repeats 3] [--cases 2]
    .venv/bin/python benchmarks/tile_batch.py --plans PLANS_JSON -c CONFIG --keep 1 0.25 -i IMAGES_DIR ...

For each model (its first fold, torch fp32, no TTA) and each tiles-per-call setting, the median over
``--repeats`` of ``Predictor.predict_preprocessed`` on the first ``--cases`` images of IMAGES_DIR (settings
interleaved case by case, so drifts of the machine hit all alike), and the largest difference of the class
probabilities from one tile per call. A small (pruned) network spends most of a one-tile call on per-call and
per-operator overhead; this measures what batching tiles wins, and for which patch sizes
(``sauronnet.inference.sliding_window.tiles_per_call`` is the default it informs).

With ``--plans`` the networks are untrained, at the plan's widths scaled by each ``--keep`` fraction (every layer
alike, as ``UniformTrainer``): time does not depend on the weights, so any plan (nnU-Net's 3D, a 512 x 512 2D
plan) can be measured without training a model; the images must suit the plan's channels.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import numpy as np
    import torch

    from benchmarks.common import (add_window_timing_args, parse_window_timing_args, preprocessed_image,
                                   uniform_plan_network)

    from sauronnet.inference.predictor import Predictor
    from sauronnet.inference.sliding_window import tiles_per_call
    from sauronnet.inference.torch_network import TorchNetwork
    from sauronnet.networks.complexity import measure

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_window_timing_args(parser, "model folders (with fold_*)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    args, images = parse_window_timing_args(parser, argv)
    torch.set_num_threads(args.threads)
    print(f"{len(images)} case(s) from {args.images}, {args.threads} threads, fp32, no TTA, median of "
          f"{args.repeats}")
    def predictors_of(model):
        if args.plans is None:
            predictors = {b: Predictor.from_model_dir(model, mirror=False, precision="fp32") for b in args.batches}
            for b, p in predictors.items():
                p.tile_batch, p.workers = b, 1  # one call at a time: what batching alone wins
            return predictors
        plans, net = uniform_plan_network(args.plans, args.configuration, model)
        return {b: Predictor([TorchNetwork(net)], plans, args.configuration, mirror=False, tile_batch=b)
                for b in args.batches}

    for model in args.models or args.keep:
        predictors = predictors_of(model)
        first = predictors[args.batches[0]]
        if args.plans is not None:
            model = f"{args.plans} {args.configuration}, untrained, {model:.0%} of the planned widths"
        cases = [preprocessed_image(image, first) for image in images]
        times = {b: [] for b in args.batches}
        probs = {}
        for _ in range(args.repeats):
            for i, case in enumerate(cases):
                for b, p in predictors.items():
                    t0 = time.perf_counter()
                    out = p.predict_preprocessed(case)
                    times[b].append(time.perf_counter() - t0)
                    probs[b, i] = out
        flops = measure(first.networks[0].net, first.config.patch_size).flops
        print(f"\n{model}: patch {list(first.config.patch_size)}, {flops / 1e9:.3f} GFLOP per patch, default "
              f"{tiles_per_call(first.config.patch_size)} tiles per call")
        base = statistics.median(times[args.batches[0]])
        for b in args.batches:
            diff = max(float(np.abs(probs[b, i] - probs[args.batches[0], i]).max()) for i in range(len(cases)))
            t = statistics.median(times[b])
            print(f"  {b:3d} tiles per call: {t:.3f} s per case ({base / t:.2f}x of {args.batches[0]}), "
                  f"max |Δ probability| {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
