"""How to spend the CPU's threads in the sliding window: inside each network call (intra-op), or on network calls
run side by side with one thread each (``Predictor``'s ``workers``, ``sauron_predict --tile-workers``).

Usage::

    .venv/bin/python benchmarks/tile_workers.py MODEL [MODEL ...] -i IMAGES_DIR [--threads 2] [--repeats 3]
        [--cases 2] [--tta]
    .venv/bin/python benchmarks/tile_workers.py --plans PLANS_JSON -c CONFIG --keep 1 0.25 -i IMAGES_DIR ...

A MODEL is a model folder (its first fold, torch) or a ``.sauron`` bundle (torch, and onnxruntime if it holds
ONNX graphs: ``sauron_export --onnx``). For each model and backend: the median over ``--repeats`` of
``Predictor.predict_preprocessed`` (fp32) on the first ``--cases`` images, with 1 worker (all ``--threads`` inside
each call) and with ``--threads`` workers of one thread each, interleaved case by case; and the largest difference
of the probabilities between the two (the same calls, so float rounding at most). A narrow (pruned) network's
operators are too small to split well over threads, so its calls gain more from running side by side.

With ``--plans`` the networks are untrained at the plan's widths scaled by each ``--keep`` fraction (timing does
not depend on the weights; see ``benchmarks/tile_batch.py``).
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
    from sauronnet.deploy.bundle import read_bundle
    from sauronnet.inference.loading import is_bundle, load_predictor
    from sauronnet.inference.predictor import Predictor
    from sauronnet.inference.torch_network import TorchNetwork

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_window_timing_args(parser, "model folders (with fold_*) or .sauron bundles")
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation on")
    parser.add_argument("--tile-batch", type=int, help="tiles per network call (default: the predictor's), e.g. 1 "
                                                       "to give a small case's tiles to the workers one by one")
    args, images = parse_window_timing_args(parser, argv)
    torch.set_num_threads(args.threads)
    print(f"{len(images)} case(s) from {args.images}, {args.threads} threads, fp32, TTA {'on' if args.tta else 'off'}, "
          f"median of {args.repeats}")

    def variants(model) -> dict:
        """(backend, workers) -> Predictor"""
        out = {}
        for workers in (1, args.threads):
            if args.plans is not None:
                plans, net = uniform_plan_network(args.plans, args.configuration, model)
                out["torch", workers] = Predictor([TorchNetwork(net)], plans, args.configuration, mirror=args.tta,
                                                  workers=workers)
                continue
            backends = ["torch"]
            if is_bundle(model) and read_bundle(model).folds[0].onnx is not None:
                backends.append("onnxruntime")
            for backend in backends:
                out[backend, workers] = load_predictor(model, mirror=args.tta, backend=backend, threads=args.threads,
                                                       workers=workers)
        return out

    for model in args.models or args.keep:
        predictors = variants(model)
        for p in predictors.values():
            p.tile_batch = args.tile_batch or p.tile_batch
        first = next(iter(predictors.values()))
        name = (f"{args.plans} {args.configuration}, untrained, {model:.0%} of the planned widths"
                if args.plans is not None else str(model))
        cases = [preprocessed_image(image, first) for image in images]
        times = {k: [] for k in predictors}
        probs = {}
        for _ in range(args.repeats):
            for i, case in enumerate(cases):
                for k, p in predictors.items():
                    t0 = time.perf_counter()
                    probs[k, i] = p.predict_preprocessed(case)
                    times[k].append(time.perf_counter() - t0)
        print(f"\n{name}: patch {list(first.config.patch_size)}, {first.tile_batch} tiles per call")
        for backend in dict.fromkeys(b for b, _ in predictors):
            one, many = (statistics.median(times[backend, w]) for w in (1, args.threads))
            diff = max(float(np.abs(probs[(backend, 1), i] - probs[(backend, args.threads), i]).max())
                       for i in range(len(cases)))
            print(f"  {backend:12s} 1 worker x {args.threads} threads: {one:.4f} s per case; {args.threads} workers x "
                  f"1 thread: {many:.4f} s ({one / many:.2f}x); max |Δ probability| {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
