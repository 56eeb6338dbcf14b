"""bf16 against fp32 on this CPU: do predictions agree, and does a model trained in bf16 segment like one trained
in fp32?

Usage::

    .venv/bin/python benchmarks/bf16_agreement.py --models MODEL_DIR [MODEL_DIR ...] --images IMAGES_DIR
        [--labels LABELS_DIR] [--threads 2] [--json FILE]

For every model: ``sauron_predict --disable-tta`` of every image in ``--precision fp32`` and ``bf16`` (the
command a user runs), then per class the Dice of the bf16 labels against the fp32 labels (the minimum over
cases, ``benchmarks.common.compare_predictions``), the fraction of
voxels with the same label, and the wall time of both commands (start-up included). With ``--labels``, also
each precision's test Dice against the reference labels (``sauron_evaluate``), so that two models of one
recipe trained in fp32 and in bf16 (``sauron_train --precision bf16``, same seed and iterations) can be
compared on the same test cases. Refused on a CPU without native bfloat16 (as ``sauron_predict`` refuses it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, OUR_BIN, compare_predictions, cpu_model, threads_env, write_rows  # noqa: E402,E501


def predict(model: Path, images: Path, out: Path, precision: str, threads: int) -> float:
    cmd = [OUR_BIN / "sauron_predict", "-i", images, "-o", out, "-m", model, "--disable-tta", "--no-progress",
           "--precision", precision, "--threads", threads]
    t0 = time.perf_counter()
    subprocess.run(list(map(str, cmd)), check=True, env={**os.environ, **threads_env(threads)},
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def test_dice(reference: Path, predictions: Path) -> dict:
    subprocess.run([str(OUR_BIN / "sauron_evaluate"), "-ref", str(reference), "-pred", str(predictions)], check=True,
                   stdout=subprocess.DEVNULL)
    summary = json.loads((predictions / "summary.json").read_text())
    return {c: v["dice"] for c, v in summary["mean"].items()}


def main(argv=None) -> int:
    from sauronnet.plans import Plans
    from sauronnet.precision import cpu_description, native_bf16

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="model folders (TRAINER__PRESET__CONFIG)")
    parser.add_argument("--images", type=Path, required=True, help="the images to predict (imagesTs)")
    parser.add_argument("--labels", type=Path, help="reference labels (labelsTs): adds each precision's test Dice")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON (used by make bench)")
    args = parser.parse_args(argv)
    if not native_bf16():
        parser.error(f"this CPU, {cpu_description()}, has no native bfloat16: nothing to compare")
    work = CACHE / "bf16_agreement"
    print(f"bf16 against fp32, sauron_predict --disable-tta, {args.threads} threads; CPU: {cpu_model()} — "
          f"{cpu_description()}")
    rows = []
    for model in args.models:
        name = "/".join(model.resolve().parts[-3:])  # results root, dataset, model: unique across roots
        out = {p: work / name / p for p in ("fp32", "bf16")}
        seconds = {p: predict(model, args.images, out[p], p, args.threads) for p in ("fp32", "bf16")}
        plans = Plans.load(next(model.glob("fold_*/plans.json")))  # every fold holds the same plans
        labels = [v for v in plans.labels.values() if v != 0]
        agree = compare_predictions(out["bf16"], out["fp32"], labels)
        dice, same = agree["dice"], agree["voxel_agreement"]
        line = (f"{name}: bf16 vs fp32 labels: Dice per class " + ", ".join(f"{c}: {d:.5f}" for c, d in dice.items())
                + f"; voxels equal {100 * same:.4f} %; sauron_predict wall time fp32 {seconds['fp32']:.2f} s, bf16 "
                f"{seconds['bf16']:.2f} s ({seconds['fp32'] / seconds['bf16']:.2f}x)")
        if args.labels:
            test = {p: test_dice(args.labels, out[p]) for p in out}
            line += "; test Dice " + ", ".join(
                f"{p} " + "/".join(f"{v:.4f}" for v in test[p].values()) for p in test)
        print(line, flush=True)
        row = {"benchmark": "bf16 agreement", "dataset": name, "nnunet": None, "reference": "fp32 prediction"}
        rows += [dict(row, metric="min per-class Dice, bf16 vs fp32 labels", sauron=min(dice.values()), unit="",
                      goal=">= 0.99"),
                 dict(row, metric="sauron_predict wall time, fp32 / bf16", sauron=seconds["fp32"] / seconds["bf16"],
                      unit="x", goal="")]
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
