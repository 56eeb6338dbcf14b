"""``make bench``: every side-by-side benchmark in one run, collected into ``benchmarks/results/latest.md``.

Usage::

    .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME ...]

Runs, one after the other (never two at once: they share the CPU), with 2 torch/BLAS threads:

0. ``plan_parity.py --toy64`` and ``--real-ct`` — our ``nnunet`` plans vs nnU-Net's, field by field;
1. ``preprocess_vs_nnunet.py --toy64 --real-ct`` — plan + preprocess vs ``nnUNetv2_plan_and_preprocess``;
2. ``train_step_vs_nnunet.py`` — one training step vs ``nnUNetTrainer.train_step`` (also ours in bf16, where the
   CPU computes bf16 natively);
3. ``predict_vs_nnunet.py --toy64 --real-ct`` — prediction with the same (imported) weights vs
   ``nnUNetv2_predict_from_modelfolder``, TTA on and off, plus the agreement of the two segmentations;
4. ``sauron_compression.py --run init3d|single3d|single2d`` — Sauron vs the unpruned trainer on held-out cases:
   pruning a trained model (toy64), single-phase 3D (cpu preset, demo set), single-phase 2D (nnU-Net widths,
   toy64; the paper's rule and ``--score-maps minmax --rollback-drop 0.2``). The ablation
   run (``--run ablation``) is not part of ``make bench``;
5. ``pruning_methods.py --dataset demo|toy64`` — Sauron against L1, FPGM, C-SGD, random, scratch and
   uniform-width baselines at Sauron's forward FLOPs (about 45 minutes per dataset).

Each script writes its rows as JSON; this one writes them as one markdown table with the command, date, commit,
CPU model and thread count, and copies that table into README.md between the ``bench:start``/``bench:end``
markers. nnU-Net v2 comes from ``.bench-venv`` (``make bench`` creates it). ``--quick`` shrinks repeats and
training (a smoke run, about 25 minutes); the default takes about six hours (the Sauron compression
runs dominate: the epochs of their eight models summed to ~4 h in the benchmark cache).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import OUR_BIN, ROOT, cpu_model, threads_env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "latest.md"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
THREADS = 2
DATASETS = {"toy64": "synthetic ~64³ (toy64)", "real_ct": "real CT (TotalSegmentator sdist)"}


#: the budgets of the Sauron compression runs (benchmarks/sauron_compression.py; issue 10's runs 1-3)
SAURON_RUNS = {
    "init3d": [],
    # the seed-2 models (the seed spread in the README) are left to a manual run
    "single3d": ["--dataset", "demo", "--epochs", "300", "--iters", "5", "--val-iters", "4",
                 "--models", "sauron", "sauron_plateau250", "sauron_rollback", "sauron_minmax_rollback"],
    "single2d": ["--epochs", "400", "--iters", "5", "--val-iters", "3", "--batch-size", "8",
                 "--models", "sauron", "sauron_minmax_rollback"],
}

#: the budgets of benchmarks/pruning_methods.py: make demo's recipe (at most 150 x 5 pruning) after an unpruned
#: model that has learned every class: 50 x 12 on the demo set (as make demo); toy64's thin class needs more (at
#: 50 x 12 and 40 x 12 its pseudo-Dice was still 0 at the last epoch; 60 x 20 reached 0.88 test Dice in the
#: compression benchmark)
PRUNING_METHODS_BUDGET = {
    "demo": ["--epochs", "50", "--iters", "12", "--val-iters", "4", "--prune-epochs", "150", "--prune-iters", "5"],
    "toy64": ["--epochs", "60", "--iters", "20", "--val-iters", "4", "--prune-epochs", "150", "--prune-iters", "5"],
}


def steps(quick: bool) -> dict[str, list[str]]:
    from sauronnet.precision import native_bf16
    n = ["-n", "1"] if quick else []
    return {
        "parity_toy64": ["plan_parity.py", "--toy64"],
        "parity_real_ct": ["plan_parity.py", "--real-ct"],
        "preprocess": ["preprocess_vs_nnunet.py", "--toy64", "--real-ct", "-np", "2", *(n or ["-n", "3"])],
        "train_step": ["train_step_vs_nnunet.py", "--threads", str(THREADS),
                       *(["--steps", "3", "--warmup", "1"] if quick else [])],
        # our step in bf16 against nnU-Net's fp32 step, where this CPU computes bf16 natively
        **({"train_step_bf16": ["train_step_vs_nnunet.py", "--threads", str(THREADS), "--precision", "bf16",
                                *(["--steps", "3", "--warmup", "1"] if quick else [])]} if native_bf16() else {}),
        "predict": ["predict_vs_nnunet.py", "--toy64", "--real-ct", "--threads", str(THREADS), *n],
        "cpu_limit": ["cpu_limit.py", "--threads", str(THREADS), *(["--repeats", "1"] if quick else [])],
        **{f"sauron_{run}": ["sauron_compression.py", "--run", run, "--threads", str(THREADS),
                             *(["--epochs", "4", "--iters", "4", "--init-epochs", "4", "--init-iters", "4"]
                               if quick else budget)]
           for run, budget in SAURON_RUNS.items()},
        # Sauron against the baselines at matched FLOPs, on the demo set and toy64
        **{f"pruning_methods_{d}": ["pruning_methods.py", "--dataset", d, "--threads", str(THREADS),
                                    *(["--epochs", "4", "--iters", "4", "--prune-epochs", "4", "--prune-iters", "4",
                                       "--val-iters", "2"] if quick else PRUNING_METHODS_BUDGET[d])]
           for d in ("demo", "toy64")},
        # after the Sauron runs: it exports and times their cached toy64 models
        "deploy": ["deploy.py", "--threads", str(THREADS), *(["-n", "1"] if quick else [])],
    }


def _fmt(value, unit: str) -> str:
    if value is None:
        return ""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}{(' ' + unit) if unit else ''}"
    return f"{value:.4g}{(' ' + unit) if unit else ''}"


def _ratio_and_goal(row: dict) -> tuple[str, str]:
    ref, ours, goal = row.get("nnunet"), row["sauron"], row.get("goal", "")
    if goal.startswith("drop"):  # Dice: a difference, not a ratio
        change = ours - ref
        return f"{change:+.4f}", f"{goal} ({'met' if -change <= float(goal.split()[-1]) else 'NOT met'})"
    if ref in (None, 0):
        if goal.startswith(">="):
            return "", f"{goal} ({'met' if ours >= float(goal[2:]) else 'NOT met'})"
        if goal.startswith("<="):
            return "", f"{goal} ({'met' if ours <= float(goal[2:]) else 'NOT met'})"
        return "", goal
    ratio = ours / ref
    if goal.startswith("<="):
        return f"{ratio:.3f}", f"ratio {goal} ({'met' if ratio <= float(goal[2:]) else 'NOT met'})"
    return f"{ratio:.3f}", goal


def render(rows: list[dict], header: list[str]) -> str:
    lines = header + ["", "| comparison | dataset | metric | reference | SauronNet | ratio (SauronNet / reference) "
                          "| goal |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio, goal = _ratio_and_goal(r)
        reference = r.get("reference", "nnU-Net v2")
        ref = f"{_fmt(r.get('nnunet'), r['unit'])} ({reference})" if r.get("nnunet") is not None else ""
        dataset = DATASETS.get(r["dataset"], r["dataset"])
        lines.append(f"| {r['benchmark']} | {dataset} | {r['metric']} | {ref} | {_fmt(r['sauron'], r['unit'])} "
                     f"| {ratio} | {goal} |")
    return "\n".join(lines) + "\n"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def update_readme(table: str) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README}: add the markers {START} and {END} where the table belongs")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table}{END}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a short training (smoke run)")
    parser.add_argument("--only", nargs="+", choices=sorted(steps(False)), help="run only these benchmarks")
    parser.add_argument("--no-readme", action="store_true", help="do not copy the table into README.md")
    args = parser.parse_args(argv)
    plan = {k: v for k, v in steps(args.quick).items() if not args.only or k in args.only}
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in plan.items():
            out = Path(tmp) / f"{name}.json"
            full = [str(OUR_BIN / "python"), str(ROOT / "benchmarks" / cmd[0]), *cmd[1:], "--json", str(out)]
            print(f"== make bench: {name}: {' '.join(['benchmarks/' + cmd[0], *cmd[1:]])}", flush=True)
            step_t0 = time.perf_counter()
            code = subprocess.run(full, cwd=ROOT, env={**__import__("os").environ, **threads_env(THREADS)}).returncode
            print(f"== {name}: exit {code} after {time.perf_counter() - step_t0:.0f} s", flush=True)
            if code != 0 or not out.is_file():
                failed.append(name)
                continue
            rows += json.loads(out.read_text())
    import torch  # noqa: F401  (version only)
    header = [
        f"Measured by `make bench` (`.venv/bin/python benchmarks/run_all.py{' --quick' if args.quick else ''}`) on "
        f"{started:%Y-%m-%d %H:%M} UTC, commit {_git('rev-parse', '--short', 'HEAD')}, in "
        f"{(time.perf_counter() - t0) / 60:.0f} min.",
        f"CPU: {cpu_model()} ({__import__('os').cpu_count()} cores), {THREADS} torch/BLAS threads per process; "
        f"Python {platform.python_version()}, torch {torch.__version__}; reference: nnU-Net v2 "
        f"{_nnunet_version()} in `.bench-venv`. Every ratio comes from both tools measured side by side in this "
        "run (alternating runs, medians); peak memory is the summed PSS of the whole process tree.",
    ]
    if failed:
        header.append(f"**Failed (no rows): {', '.join(failed)}** — see the console output of `make bench`.")
    table = render(rows, header)
    results = RESULTS.with_name("quick.md") if args.quick else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(f"# SauronNet vs nnU-Net v2 — latest `make bench{'-quick' if args.quick else ''}`\n\n" + table)
    if not (args.no_readme or args.only or args.quick):
        update_readme(table)
    print(table)
    print(f"written to {results}")
    return 1 if failed else 0


def _nnunet_version() -> str:
    from benchmarks.common import BENCH_VENV
    found = sorted(BENCH_VENV.glob("lib/python*/site-packages/nnunetv2-*.dist-info"))
    return found[-1].name.split("-")[1].removesuffix(".dist") if found else "?"


if __name__ == "__main__":
    sys.exit(main())
