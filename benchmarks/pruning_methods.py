"""Sauron against the baseline pruning methods at matched forward FLOPs, on held-out test cases (issue 13).

Usage::

    .venv/bin/python benchmarks/pruning_methods.py [--dataset demo|toy64] [--epochs E --iters I]
        [--prune-epochs E2 --prune-iters I2] [--val-iters V] [--threads 2] [--methods ...] [--reuse] [--json FILE]

The recipe is the one the compression benchmark (``sauron_compression.py --run init3d``) and ``make demo`` use:
the unpruned ``Trainer`` trains E × I iterations; ``SauronTrainer --init-from`` that model prunes it with the
paper's constants for at most E2 × I2 (our ``--stop-after 10`` ends it when pruning has finished, after E_s
epochs). Every other method is then matched to Sauron's final forward FLOPs (``--match``) on the same data
(fold ``all``), with the same seed:

- fine-tuning methods start from the same unpruned model and train E_s × I2: ``sauron_lambda0`` (λ = 0, no
  clustering term, exactly E_s epochs), ``l1`` (one-shot, then fine-tuning), ``fpgm`` (soft, gradual),
  ``csgd`` (centripetal SGD, merged at the end), ``random`` (Sauron's removals replayed with random channels);
- from-scratch methods train as many iterations as the unpruned model and Sauron together (E × I + E_s × I2,
  in epochs of I): ``scratch`` (Sauron's final widths), ``uniform`` (every width scaled by one factor).
- ``random`` and ``uniform`` are trained with a second seed too (``*_seed2``): the spread between seeds is the
  margin Sauron must beat them by.

Printed (and written with ``--json`` for ``make bench``): per method forward FLOPs and parameters (one patch),
test Dice per class and HD95 (``sauron_predict --disable-tta`` + ``sauron_evaluate``), CPU sliding-window time per
test case (no TTA, all models interleaved, median of 3), training time of its own phase; then the clustering
metrics of ``sauron_inspect`` (one test case) for the unpruned model, Sauron and Sauron with λ = 0, both at
epoch E_s.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, OUR_BIN, cpu_model, write_rows  # noqa: E402
from benchmarks.sauron_compression import Bench, Model, Run  # noqa: E402

UNPRUNED, SAURON = "Trainer", "sauron"
SEED2 = 12346
#: name → (trainer, extra flags, how it trains: unpruned | sauron | finetune | scratch)
METHODS = {
    UNPRUNED: ("Trainer", (), "unpruned"),
    SAURON: ("SauronTrainer", (), "sauron"),
    "sauron_lambda0": ("SauronTrainer", ("--lambda", "0"), "finetune"),
    "l1": ("L1Trainer", (), "finetune"),
    "fpgm": ("FPGMTrainer", (), "finetune"),
    "csgd": ("CSGDTrainer", (), "finetune"),
    "random": ("RandomTrainer", (), "finetune"),
    "random_seed2": ("RandomTrainer", ("--seed", str(SEED2)), "finetune"),
    "scratch": ("ScratchTrainer", (), "scratch"),
    "uniform": ("UniformTrainer", (), "scratch"),
    "uniform_seed2": ("UniformTrainer", ("--seed", str(SEED2)), "scratch"),
}


class Methods(Bench):
    """The compression benchmark's cache and helpers, with per-method budgets."""

    def __init__(self, dataset: str, run: Run, threads: int, kinds: dict[str, str]):
        super().__init__(dataset, run, threads)
        self.kinds = kinds

    def key(self, model: Model) -> str:
        r = self.run
        budget = f"{r.epochs}x{r.iters}v{r.val_iters}"
        if self.kinds[model.name] != "unpruned":
            budget += f"_init{r.init_epochs}x{r.init_iters}"
        return f"{r.configuration}_{r.preset}_{budget}_{model.name}"

    def sauron_epochs(self) -> int:
        return json.loads((self.model_dir(self.model(SAURON)) / "fold_all" / "pruning_summary.json").read_text())[
            "epochs_trained"]

    def model(self, name: str) -> Model:
        return next(m for m in self.run.models if m.name == name)

    def train_cmd(self, model: Model) -> list:
        r, kind = self.run, self.kinds[model.name]
        cmd = [OUR_BIN / "sauron_train", self.name[7:10], "all", "-tr", model.trainer, "-p", r.preset,
               "-c", r.configuration, "--val-iters", r.val_iters, "--threads", self.threads, "--no-progress",
               "--overwrite"]
        unpruned = self.model_dir(self.model(UNPRUNED))
        sauron = self.model_dir(self.model(SAURON))
        if kind == "unpruned":
            return cmd + ["--epochs", r.epochs, "--iters", r.iters, *model.flags]
        if kind == "sauron":
            return cmd + ["--epochs", r.init_epochs, "--iters", r.init_iters, "--init-from", unpruned, *model.flags]
        e_s = self.sauron_epochs()
        if kind == "finetune":
            cmd += ["--epochs", e_s, "--iters", r.init_iters, "--init-from", unpruned, *model.flags]
            if model.trainer == "SauronTrainer":
                return cmd + ["--stop-after", 10 ** 6]  # exactly E_s epochs, to compare with Sauron's epoch E_s
            return cmd + ["--match", sauron]
        budget = r.epochs * r.iters + e_s * r.init_iters
        return cmd + ["--epochs", math.ceil(budget / r.iters), "--iters", r.iters, "--match", sauron, *model.flags]

    def train(self, model: Model, reuse: bool) -> None:
        final = self.checkpoint(model)
        if reuse and final.is_file():
            print(f"reusing {final}", flush=True)
            return
        self.sh(self.train_cmd(model), model)


def cluster_rows(bench: Methods, names: list[str]) -> dict[str, dict]:
    """``sauron_inspect``'s clustering summary (means over layers) of each model on the first test case."""
    from sauronnet.inspection.clusters import layer_metrics, summarise
    from sauronnet.inspection.feature_maps import inspect_case

    image = sorted((bench.root / "raw" / bench.name / "imagesTs").iterdir())[0]
    out = {}
    for name in names:
        maps = inspect_case(bench.model_dir(bench.model(name)), [image], fold="all")
        out[name] = summarise({k: layer_metrics(v) for k, v in maps.layers.items()})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["toy64", "demo"], default="demo")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the unpruned model")
    parser.add_argument("--iters", type=int, default=20, help="iterations per epoch of the unpruned model and the "
                                                              "from-scratch methods")
    parser.add_argument("--prune-epochs", type=int, default=150, help="most epochs of Sauron's pruning phase")
    parser.add_argument("--prune-iters", type=int, default=5, help="iterations per epoch of the pruning phases")
    parser.add_argument("--val-iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS),
                        help="only these (the unpruned model and Sauron are always included)")
    parser.add_argument("--reuse", action="store_true", help="keep models already trained with the same budget")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON (used by make bench)")
    args = parser.parse_args(argv)
    names = [n for n in METHODS if n in (UNPRUNED, SAURON) or not args.methods or n in args.methods]
    run = Run("3d_fullres", "cpu", [Model(n, METHODS[n][0], METHODS[n][1]) for n in names], epochs=args.epochs,
              iters=args.iters, init_epochs=args.prune_epochs, init_iters=args.prune_iters, val_iters=args.val_iters)
    bench = Methods(args.dataset, run, args.threads, {n: METHODS[n][2] for n in names})
    t0 = time.perf_counter()
    bench.prepare()
    for m in run.models:
        bench.train(m, args.reuse)
    # the epochs' own time (training and validation batches, pruning), without start-up and final validation
    train_time = {m.name: sum(h["epoch_time"] for h in bench.history(m)[0]) for m in run.models}
    dice = {m.name: bench.evaluate(m) for m in run.models}
    size = {m.name: bench.complexity(m) for m in run.models}
    infer = bench.inference_times()
    clusters = cluster_rows(bench, [n for n in (UNPRUNED, SAURON, "sauron_lambda0") if n in names])

    labels = dice[UNPRUNED]["labels"]
    target = size[SAURON][1]
    n_test = len(list((bench.root / "raw" / bench.name / "imagesTs").iterdir()))
    cmd = " ".join(["benchmarks/pruning_methods.py"] + (argv if argv is not None else sys.argv[1:]))
    e_s = bench.sauron_epochs()
    lines = [f"Pruning methods at Sauron's forward FLOPs: {bench.name}, cpu preset, 3d_fullres, fold all; unpruned "
             f"{run.epochs} x {run.iters}, Sauron --init-from it at most {run.init_epochs} x {run.init_iters} (it ran "
             f"{e_s} epochs), fine-tuning methods {e_s} x {run.init_iters} from the unpruned model, from-scratch "
             f"methods {run.epochs * run.iters + e_s * run.init_iters} iterations; {n_test} held-out test cases, no "
             f"TTA; {args.threads} threads; CPU: {cpu_model()}",
             f"command: .venv/bin/python {cmd}", "",
             "| method | trainer | fwd GFLOP | vs Sauron | params | "
             + " | ".join(f"Dice {c} | HD95 {c}" for c in labels)
             + " | mean Dice | inference s/case | training s (its epochs) |",
             "|" + "---|" * (8 + 2 * len(labels))]
    rows = []
    for m in run.models:
        p, f = size[m.name]
        d = dice[m.name]
        lines.append(f"| {m.name} | {m.trainer} | {f / 1e9:.4f} | {100 * (f / target - 1):+.1f} % | {p:,} | "
                     + " | ".join(f"{d['mean'][str(c)]['dice']:.4f} | {_mm(d['mean'][str(c)]['hd95'])}"
                                  for c in labels)
                     + f" | {d['foreground_mean_dice']:.4f} | {infer[m.name]:.3f} | {train_time[m.name]:.0f} |")
        what = f"Pruning methods: {m.name} ({m.trainer}) at Sauron's FLOPs"
        rows.append({"benchmark": what, "dataset": args.dataset, "metric": "test Dice, mean foreground",
                     "nnunet": dice[SAURON]["foreground_mean_dice"], "sauron": d["foreground_mean_dice"], "unit": "",
                     "goal": "" if m.name in (UNPRUNED, SAURON) else "<= Sauron's", "reference": "Sauron"})
        rows.append({"benchmark": what, "dataset": args.dataset, "metric": "forward FLOPs per patch",
                     "nnunet": target / 1e9, "sauron": f / 1e9, "unit": "GFLOP",
                     "goal": "" if m.name in (UNPRUNED, SAURON, "sauron_lambda0") else "within 5 %",
                     "reference": "Sauron"})
    spread = {base: abs(dice[base]["foreground_mean_dice"] - dice[f"{base}_seed2"]["foreground_mean_dice"])
              for base in ("random", "uniform") if base in dice and f"{base}_seed2" in dice}
    lines.append("")
    for base, s in spread.items():
        margin = dice[SAURON]["foreground_mean_dice"] - max(dice[base]["foreground_mean_dice"],
                                                            dice[f"{base}_seed2"]["foreground_mean_dice"])
        lines.append(f"{base}: seed-to-seed spread of mean Dice {s:.4f}; Sauron's margin over its better seed "
                     f"{margin:+.4f} ({'larger' if margin > s else 'NOT larger'} than the spread)")
    lines += ["", f"Clustering of feature maps (sauron_inspect on {n_test and 'the first test case'}; means over "
                  "prunable layers; distances between min-max normalised, pooled maps as in δ_opt; clusters at "
                  "distance threshold 0.1):",
              "| model | mean pairwise distance | median | clusters / channels | silhouette |", "|---|---|---|---|---|"]
    for name, c in clusters.items():
        lines.append(f"| {name} | {c['mean_distance']:.4f} | {c['median_distance']:.4f} | "
                     f"{c['clusters']:.1f} / {c['channels']:.1f} | {_num(c['silhouette'])} |")
    print("\n".join(lines))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    out = CACHE / "pruning_methods" / f"{args.dataset}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    if args.json:
        write_rows(args.json, rows)
    return 0


def _num(v) -> str:
    return "undefined" if v is None else f"{v:.3f}"


def _mm(v) -> str:
    return "inf" if v is None or (isinstance(v, float) and math.isinf(v)) else f"{v:.2f}"


if __name__ == "__main__":
    sys.exit(main())
