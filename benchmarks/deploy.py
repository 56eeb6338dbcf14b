"""Deployment figures: torch vs onnxruntime prediction, bundle size, and the deploy install's disk size.

Usage::

    .venv/bin/python benchmarks/deploy.py [--models DIR ...] [-n 3] [--threads 2] [--json FILE]

For each model folder (default: the unpruned ``Trainer`` and the Sauron-pruned model of
``benchmarks/sauron_compression.py --run init3d`` on toy64, cpu plan) ``sauron_export --onnx`` writes a bundle, then
``sauron_predict -m BUNDLE`` segments the toy64 test images with ``--backend torch`` and ``--backend onnxruntime``,
alternating, same threads, TTA on, start-up included; medians of wall time and peak memory (summed PSS of the
process tree). Also: bundle size against the model folder and against the tensors it holds, and the disk size of a
fresh venv with ``pip install .[deploy]`` against ``.venv`` (torch and the training install). Goals: onnxruntime
≤ torch wall time on the pruned model; bundle ≤ 1.1× its tensors; deploy venv ≤ ¼ of the torch venv.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, OUR_BIN, ROOT, cpu_model, run_measured, threads_env, write_rows  # noqa: E402

WORK = CACHE / "deploy"
COMPRESSION = CACHE / "sauron_compression" / "toy64"


def default_models() -> list[Path]:
    found = []
    for pattern in ("3d_fullres_cpu_*_Trainer/*/Trainer__cpu__3d_fullres",
                    "3d_fullres_cpu_*_sauron_init*/*/SauronTrainer__cpu__3d_fullres"):
        hits = sorted((p for p in (COMPRESSION / "results").glob(pattern)
                       if any(p.glob("fold_*/checkpoint_final.pth"))), key=lambda p: p.stat().st_mtime)
        if hits:
            found.append(hits[-1])
    if len(found) < 2:
        raise SystemExit("no cached toy64 models: run `benchmarks/sauron_compression.py --run init3d` first, or pass "
                         "--models")
    return found


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


def deploy_venv() -> Path:
    venv = WORK / "deploy-venv"
    if not (venv / "bin" / "sauron_predict").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{ROOT}[deploy]"],
                       check=True)
    return venv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", type=Path, help="model folders (default: cached toy64 models)")
    parser.add_argument("-n", "--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON (used by make bench)")
    args = parser.parse_args(argv)
    models = args.models or default_models()
    images = COMPRESSION / "raw" / "Dataset002_Toy64" / "imagesTs"
    WORK.mkdir(parents=True, exist_ok=True)
    env = threads_env(args.threads)
    rows = []

    def row(dataset, metric, torch_value, ours, unit, goal="", reference="torch backend"):
        rows.append({"benchmark": "deployment", "dataset": dataset, "metric": metric, "nnunet": torch_value,
                     "sauron": ours, "unit": unit, "goal": goal, "reference": reference})

    for model in models:
        name = model.parent.parent.name
        bundle = WORK / f"{name}.sauron"
        run_measured([OUR_BIN / "sauron_export", model, "-o", bundle, "--onnx", "--overwrite"])
        from sauronnet.deploy.bundle import read_bundle
        b = read_bundle(bundle)
        tensors = sum(a.nbytes for f in b.folds for a in f.weights.values()) + sum(len(f.onnx) for f in b.folds)
        times = {"torch": [], "onnxruntime": []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for backend in times:
                    out = Path(tmp) / backend
                    shutil.rmtree(out, ignore_errors=True)
                    times[backend].append(run_measured(
                        [OUR_BIN / "sauron_predict", "-i", images, "-o", out, "-m", bundle, "--backend", backend,
                         "--threads", args.threads, "--no-progress", "--precision", "fp32"], env)[:2])
        med = {k: (statistics.median(w for w, _ in v), statistics.median(p for _, p in v)) for k, v in times.items()}
        n = len(list(images.iterdir()))
        label = f"{name} ({sum(b.folds[0].widths.values())} channels)"
        row(label, f"sauron_predict wall time, {n} cases, TTA on", med["torch"][0], med["onnxruntime"][0], "s",
            "<= 1.0" if "sauron" in name else "", "torch backend (onnxruntime in the SauronNet column)")
        row(label, "sauron_predict peak memory (PSS, process tree)", med["torch"][1] / 2**20,
            med["onnxruntime"][1] / 2**20, "MiB", "", "torch backend (onnxruntime in the SauronNet column)")
        row(label, "bundle size vs the tensors it holds (weights + ONNX graphs)", tensors / 2**20,
            bundle.stat().st_size / 2**20, "MiB", "<= 1.1", "tensors")
        row(label, "bundle size vs the model folder", dir_size(model) / 2**20, bundle.stat().st_size / 2**20, "MiB",
            "", "model folder")
    venv = deploy_venv()
    row("install", "disk size: deploy venv (pip install .[deploy]) vs .venv (torch, training install)",
        dir_size(ROOT / ".venv") / 2**20, dir_size(venv) / 2**20, "MiB", "<= 0.25", "torch venv")
    print(f"deployment, {args.threads} threads, median of {args.repeats} alternating runs; CPU: {cpu_model()}")
    print("| model | metric | reference | SauronNet | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['metric']} | {r['nnunet']:.3f} ({r['reference']}) | {r['sauron']:.3f} {r['unit']} "
              f"| {r['sauron'] / r['nnunet']:.3f} |")
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
