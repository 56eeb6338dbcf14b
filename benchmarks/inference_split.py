"""Where a model's CPU inference time goes: the sliding window against the network, and the network by operator.

Usage::

    .venv/bin/python benchmarks/inference_split.py MODEL_DIR [MODEL_DIR ...] -i IMAGE [--threads 2] [--repeats 5]

For each model (a folder with ``fold_*``; its first fold is used) on one preprocessed image, no TTA: the median
over ``--repeats`` of the whole sliding window (``Predictor.predict_preprocessed``) and of the time spent inside the
network's forward calls, and ``torch.profiler``'s self-CPU time per operator over ten forwards of one patch. Run
it on an unpruned model and its pruned version to see why inference time falls less than FLOPs (issue 10: the
pruned demo network had 8.6× fewer FLOPs and ran 2.7× faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from sauronnet.inference.predictor import Predictor
    from sauronnet.networks.complexity import measure
    from benchmarks.common import preprocessed_image

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="model folders (with fold_*)")
    parser.add_argument("-i", "--image", type=Path, required=True, help="one image (all models must share its plan)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    predictors = [Predictor.from_model_dir(m, mirror=False, precision="fp32") for m in args.models]
    for p in predictors:
        p.workers = 1  # one call at a time, so that the time inside the network's calls adds up
    first = predictors[0]
    case = preprocessed_image(args.image, first)
    print(f"{args.image.name}: preprocessed {case.shape}, patch {list(first.config.patch_size)}, "
          f"{args.threads} threads, fp32, no TTA")
    for model, predictor in zip(args.models, predictors):
        runner = predictor.networks[0]
        net = runner.net
        inside = {"s": 0.0, "calls": 0}
        forward = net.forward

        def timed(*a, **kw):
            t0 = time.perf_counter()
            out = forward(*a, **kw)
            inside["s"] += time.perf_counter() - t0
            inside["calls"] += 1
            return out

        net.forward = timed
        totals, nets = [], []
        for _ in range(args.repeats):
            inside.update(s=0.0, calls=0)
            t0 = time.perf_counter()
            predictor.predict_preprocessed(case)
            totals.append(time.perf_counter() - t0)
            nets.append(inside["s"])
        net.forward = forward
        total, in_net = statistics.median(totals), statistics.median(nets)
        flops = measure(net, predictor.config.patch_size).flops
        print(f"\n{model}: {flops / 1e9:.3f} GFLOP per patch; sliding window {total:.3f} s, of which the network "
              f"{in_net:.3f} s in {inside['calls']} windows and the rest {total - in_net:.3f} s")
        x = torch.randn(1, len(predictor.plans.channel_names), *predictor.config.patch_size)
        with torch.no_grad():
            for _ in range(3):
                net(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(10):
                    net(x)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6, max_name_column_width=36))
    return 0


if __name__ == "__main__":
    sys.exit(main())
