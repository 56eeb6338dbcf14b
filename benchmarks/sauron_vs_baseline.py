"""Sauron vs the unpruned baseline (cpu preset): Dice, size, FLOPs, CPU inference time.

Usage::

    .venv/bin/python benchmarks/sauron_vs_baseline.py [--dataset toy64|demo] [--epochs 100] [--iters 25]
        [--threads 2] [--skip-training] [--json FILE]

Datasets: ``toy64`` (default; the 10-case ~64³ set of the nnU-Net comparisons, 2 held-out test cases) or
``demo`` (the demo dataset, 12 training / 4 test cases).

Trains ``Trainer`` and ``SauronTrainer`` (fold ``all``, identical epochs, iterations and seed, the paper's
constants) with the command line into ``benchmarks/cache/``, then prints one table:

- Dice per class of both on the held-out test cases (``sauron_predict`` + ``sauron_evaluate``, TTA on);
- parameters and forward FLOPs (one patch, ``torch.utils.flop_counter``) of both;
- CPU sliding-window inference time per test case (no TTA), the two models interleaved case by case, median;
- the Sauron run's first- and last-epoch times (from ``metrics.jsonl``).

Goals (the paper's claim): ≥ 90 % fewer FLOPs, Dice drop ≤ 0.01, inference ≥ 4× faster, last epoch ≤ 0.5× the
first. Runs for a long time (about an hour for 100 epochs of 25 iterations): start it in the background.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, OUR_BIN, cpu_model, threads_env, toy64_spec, write_rows  # noqa: E402

TRAINERS = ("Trainer", "SauronTrainer")
ROOT = CACHE / "sauron_vs_baseline"
DATASET = "Dataset001_Demo"


def use_dataset(which: str) -> None:
    """Points the module at the demo or the toy64 set (each with its own cache folder)."""
    global ROOT, DATASET
    ROOT = CACHE / "sauron_vs_baseline" / which
    DATASET = "Dataset002_Toy64" if which == "toy64" else "Dataset001_Demo"


def env() -> dict:
    return {**os.environ, "SAURON_RAW": str(ROOT / "raw"), "SAURON_PREPROCESSED": str(ROOT / "preprocessed"),
            "SAURON_RESULTS": str(ROOT / "results")}


def run(cmd: list) -> None:
    print("$", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), env=env(), check=True)


def train(epochs: int, iters: int, threads: int, rho: int | None = None) -> None:
    from sauronnet.demo import DemoSpec, write_demo_dataset
    write_demo_dataset(ROOT / "raw", toy64_spec() if DATASET == "Dataset002_Toy64" else DemoSpec(), overwrite=True)
    task = DATASET[7:10]
    run([OUR_BIN / "sauron_plan_and_preprocess", "-d", task, "--preset", "cpu", "--no-progress"])
    for tr in TRAINERS:
        extra = ["--rho", rho] if rho is not None and tr == "SauronTrainer" else []
        run([OUR_BIN / "sauron_train", task, "all", "-tr", tr, "-p", "cpu", "--epochs", epochs, "--iters", iters,
             "--threads", threads, "--no-progress", *extra])


def model_dir(trainer: str) -> Path:
    return ROOT / "results" / DATASET / f"{trainer}__cpu__3d_fullres"


def evaluate(trainer: str) -> dict:
    out = ROOT / "predictions" / trainer
    images = ROOT / "raw" / DATASET / "imagesTs"
    run([OUR_BIN / "sauron_predict", "-i", images, "-o", out, "-m", model_dir(trainer), "--no-progress"])
    run([OUR_BIN / "sauron_evaluate", "-ref", ROOT / "raw" / DATASET / "labelsTs", "-pred", out])
    return json.loads((out / "summary.json").read_text())


def inference_times(threads: int, repeats: int = 3) -> dict[str, float]:
    """Median sliding-window time per test case (no TTA), the two models interleaved case by case."""
    import torch

    from sauronnet.inference.predictor import Predictor
    from sauronnet.io import read_images
    from sauronnet.preprocessing.preprocess import preprocess_case

    torch.set_num_threads(threads)
    predictors = {t: Predictor.from_model_dir(model_dir(t), mirror=False) for t in TRAINERS}
    images = sorted((ROOT / "raw" / DATASET / "imagesTs").iterdir())
    first = predictors[TRAINERS[0]]
    cases = []
    for p in images:
        data, geo = read_images([p])
        cases.append(preprocess_case(data, None, geo, p.name, first.plans, first.config)[0])
    times = {t: [] for t in TRAINERS}
    for _ in range(repeats):
        for pre in cases:
            for t in TRAINERS:
                t0 = time.perf_counter()
                predictors[t].predict_preprocessed(pre)
                times[t].append(time.perf_counter() - t0)
    return {t: statistics.median(v) for t, v in times.items()}


def complexity(trainer: str) -> tuple[int, int]:
    import torch

    from sauronnet.inference.predictor import load_fold_network
    from sauronnet.networks.complexity import measure
    net, plans, configuration = load_fold_network(model_dir(trainer) / "fold_all" / "checkpoint_final.pth",
                                                  torch.device("cpu"))
    c = measure(net, plans.configuration(configuration).patch_size)
    return c.parameters, c.flops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["toy64", "demo"], default="toy64")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--iters", type=int, default=25)
    parser.add_argument("--rho", type=int, help="Sauron's plateau/patience epochs (default: the paper's 5; short "
                                                "runs need fewer for the thresholds to climb)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true", help="reuse the models already trained")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON (used by make bench)")
    args = parser.parse_args(argv)
    use_dataset(args.dataset)
    os.environ.update(threads_env(args.threads))
    t0 = time.perf_counter()
    if not args.skip_training:
        train(args.epochs, args.iters, args.threads, args.rho)
    dice = {t: evaluate(t) for t in TRAINERS}
    size = {t: complexity(t) for t in TRAINERS}
    infer = inference_times(args.threads)
    metrics = model_dir("SauronTrainer") / "fold_all" / "metrics.jsonl"
    epochs = [json.loads(x) for x in metrics.read_text().splitlines() if x]
    first, last = epochs[0]["epoch_time"], epochs[-1]["epoch_time"]
    base, sau = TRAINERS
    labels = dice[base]["labels"]
    lines = [f"Sauron vs baseline, {DATASET} (cpu preset), fold all, {len(epochs)} epochs x {args.iters} "
             f"iterations, seed fixed; {args.threads} threads; CPU: {cpu_model()}",
             f"command: .venv/bin/python benchmarks/sauron_vs_baseline.py --dataset {args.dataset} --epochs "
             f"{args.epochs} --iters {args.iters} --threads {args.threads}"
             f"{'' if args.rho is None else f' --rho {args.rho}'}", "",
             "| metric | Trainer (unpruned) | SauronTrainer | ratio / change |", "|---|---|---|---|"]
    for c in labels:
        a, b = dice[base]["mean"][str(c)]["dice"], dice[sau]["mean"][str(c)]["dice"]
        lines.append(f"| test Dice label {c} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    a, b = dice[base]["foreground_mean_dice"], dice[sau]["foreground_mean_dice"]
    lines.append(f"| test Dice mean | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    lines.append(f"| parameters | {size[base][0]:,} | {size[sau][0]:,} | {size[sau][0] / size[base][0]:.3f}x |")
    lines.append(f"| forward GFLOP (one patch) | {size[base][1] / 1e9:.4f} | {size[sau][1] / 1e9:.4f} | "
                 f"{size[sau][1] / size[base][1]:.3f}x ({100 * (1 - size[sau][1] / size[base][1]):.1f} % fewer) |")
    lines.append(f"| CPU inference per test case (no TTA, median) | {infer[base]:.3f} s | {infer[sau]:.3f} s | "
                 f"{infer[base] / infer[sau]:.2f}x faster |")
    lines.append(f"| Sauron epoch time first / last | | {first:.1f} s / {last:.1f} s | {last / first:.2f}x |")
    print("\n".join(lines))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    if args.json:
        what = (f"Sauron vs unpruned ({len(epochs)} ep x {args.iters} it"
                f"{'' if args.rho is None else f', rho {args.rho}'})")

        def row(metric, ref, ours, unit="", goal="", reference="unpruned Trainer"):
            return {"benchmark": what, "dataset": args.dataset, "metric": metric, "nnunet": ref, "sauron": ours,
                    "unit": unit, "goal": goal, "reference": reference}
        write_rows(args.json, [
            row("forward FLOPs per patch", size[base][1] / 1e9, size[sau][1] / 1e9, "GFLOP", "<= 0.1"),
            row("parameters", size[base][0], size[sau][0], "", ""),
            row("CPU inference per test case (no TTA)", infer[base], infer[sau], "s", "<= 0.25"),
            row("test Dice, mean foreground", dice[base]["foreground_mean_dice"],
                dice[sau]["foreground_mean_dice"], "", "drop <= 0.01"),
            row("Sauron epoch time: last epoch vs first epoch", first, last, "s", "<= 0.5", "first epoch"),
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
