"""The CUDA check: Sauron training on a GPU with mixed precision, in one short run (about 3 minutes on one GPU).

Usage (on a machine with CUDA; nothing here runs in CI)::

    .venv/bin/python benchmarks/cuda_check.py [--work DIR] [--gpus N]

Steps: the small synthetic demo dataset, planned with the ``cpu`` preset; ``sauron_train`` on CUDA (``--precision
auto``: float16 AMP with a gradient scaler) with a first threshold that prunes from the first epoch (``--tau0``),
under ``torchrun`` when ``--gpus`` > 1; then ``sauron_predict`` of the test images with the final checkpoint on
the GPU and on the CPU. Checks, each printed PASS/FAIL: every loss finite (no NaN from fp16), channels removed,
the checkpoint reloads on the CPU, and the CPU labels equal the GPU labels (voxel agreement ≥ 99.9 %: float16 and
float32 kernels may tie-break a handful of voxels differently). Exit status 0 when all pass.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(cmd: list[str], env: dict) -> None:
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed at the end)")
    parser.add_argument("--gpus", type=int, default=1, help="processes (one per GPU) for the training run")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iters", type=int, default=25)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: run the same steps on the CPU (fp32), to check the script itself")
    args = parser.parse_args(argv)
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: this check needs one (--device cpu checks the script itself)")
        return 2
    if args.device == "cuda":
        print(f"torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="sauron_cuda_"))
    env = dict(os.environ, SAURON_RAW=str(work / "raw"), SAURON_PREPROCESSED=str(work / "preprocessed"),
               SAURON_RESULTS=str(work / "results"), PYTHONPATH=str(ROOT))
    checks: list[tuple[str, bool, str]] = []
    try:
        _run([str(BIN / "sauron_demo_data"), "--train", "10", "--test", "3", "--overwrite"], env)
        _run([str(BIN / "sauron_plan_and_preprocess"), "-d", "1", "--preset", "cpu"], env)
        train = ["1", "0", "--device", args.device, "--epochs", str(args.epochs), "--iters", str(args.iters),
                 "--val-iters", "5", "--tau0", "0.4", "--tau-max", "0.6", "--kappa", "1", "--overwrite",
                 "--no-progress"]
        if args.gpus > 1:
            _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.gpus), "-m",
                  "sauronnet.train", *train], env)
        else:
            _run([str(BIN / "sauron_train"), *train], env)
        fold = work / "results" / "Dataset001_Demo" / "SauronTrainer__cpu__3d_fullres" / "fold_0"
        metrics = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()]
        losses = [m[k] for m in metrics for k in ("train_loss", "val_loss")]
        arithmetic = "AMP" if args.device == "cuda" else "fp32"
        checks.append((f"every loss finite ({arithmetic})", all(math.isfinite(v) for v in losses),
                       f"{len(metrics)} epochs, last train loss {metrics[-1]['train_loss']:.4f}"))
        summary = json.loads((fold / "pruning_summary.json").read_text())
        checks.append(("channels removed", summary["parameters_after"] < summary["parameters_before"],
                       f"parameters {summary['parameters_before']} -> {summary['parameters_after']}, forward FLOPs "
                       f"-{100 * summary['flops_removed_fraction']:.1f} %"))
        from sauronnet.checkpoint import load_checkpoint, network_from_checkpoint
        net, _, _ = network_from_checkpoint(load_checkpoint(fold / "checkpoint_final.pth", "cpu"))
        checks.append(("checkpoint reloads on the CPU", next(net.parameters()).device.type == "cpu",
                       f"{sum(net.widths().values())} channels"))
        model = fold.parent
        images = work / "raw" / "Dataset001_Demo" / "imagesTs"
        for folder, device in (("pred_trained_device", args.device), ("pred_cpu", "cpu")):
            _run([str(BIN / "sauron_predict"), "-i", str(images), "-o", str(work / folder), "-m", str(model), "-f",
                  "0", "--device", device, "--precision", "fp32"], env)
        import SimpleITK as sitk
        agree, total = 0, 0
        for gpu_file in sorted((work / "pred_trained_device").glob("*.nii.gz")):
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(gpu_file)))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(work / "pred_cpu" / gpu_file.name)))
            agree, total = agree + int((a == b).sum()), total + a.size
        checks.append((f"CPU labels equal {args.device.upper()} labels", total > 0 and agree / total >= 0.999,
                       f"{agree}/{total} voxels agree ({100 * agree / max(total, 1):.4f} %)"))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return 0 if checks and all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
