"""Peak memory and time of ``sauron_predict`` on one large synthetic CT-like volume.

Usage::

    .venv/bin/python benchmarks/predict_big_volume.py -m MODEL_DIR|BUNDLE [--shape 300 512 512] [--tta] [--threads 2]
        [--backend auto|torch|onnxruntime] [--precision auto|fp32|bf16]

Writes a deterministic 512 × 512 × 300 (x, y, z) volume with CT-like intensities (air −1000, a body ellipse of
soft tissue ~40 HU with noise, a bright "spine") at 0.8 × 0.8 × 2.5 mm into ``benchmarks/cache/``, then runs
``sauron_predict`` on it as a user would (start-up included) and reports wall time and the peak memory of the
process tree (summed PSS, sampled every 20 ms). The model can be any trained model folder, e.g. the demo's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, OUR_BIN, cpu_model, run_measured, threads_env  # noqa: E402


def make_volume(shape_zyx: tuple[int, int, int], path: Path) -> Path:
    if path.is_file():
        return path
    rng = np.random.RandomState(0)
    z, y, x = shape_zyx
    vol = np.full(shape_zyx, -1000, np.int16)
    yy, xx = np.mgrid[:y, :x]
    body = ((yy - y / 2) / (0.38 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 <= 1
    spine = ((yy - 0.7 * y) / (0.05 * y)) ** 2 + ((xx - x / 2) / (0.05 * x)) ** 2 <= 1
    for k in range(z):
        sl = np.where(body, 40, -1000).astype(np.int16)
        sl[spine] = 700
        sl[body] += rng.normal(0, 15, int(body.sum())).astype(np.int16)
        vol[k] = sl
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((0.8, 0.8, 2.5))
    img.SetOrigin((-204.8, -204.8, -375.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True, type=Path,
                        help="trained model folder (with fold_*) or a .sauron bundle")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime"],
                        help="sauron_predict's --backend (onnxruntime needs a bundle exported with --onnx)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--tta", action="store_true", help="mirroring TTA (8x the network passes)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    src = make_volume(shape, CACHE / "big_volume" / f"big_{'x'.join(map(str, shape))}_0000.nii.gz")
    out = CACHE / "big_volume" / "pred"
    cmd = [OUR_BIN / "sauron_predict", "-i", src, "-o", out, "-m", args.model, "--no-progress",
           "--threads", str(args.threads), "--backend", args.backend, "--precision", args.precision
           ] + ([] if args.tta else ["--disable-tta"])
    wall, peak, text = run_measured(cmd, env=threads_env(args.threads))
    print(text.strip().splitlines()[-1])
    print(f"predict one {shape[2]}x{shape[1]}x{shape[0]} (x, y, z) volume with {args.model.name}, "
          f"TTA {'on' if args.tta else 'off'}, {args.threads} threads, CPU: {cpu_model()}")
    print(f"| wall time (start-up included) | {wall:.1f} s |\n| peak memory (PSS, process tree) | "
          f"{peak / 2**30:.2f} GiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
