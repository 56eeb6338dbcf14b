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

With ``--ties``, the tie structure behind the disagreements: the model's fp32 class probabilities on the input
grid (the predictor's Python API, same settings; 4 bytes × classes × voxels of memory) give each voxel's margin
between its two most probable classes; reported are the margins of the voxels whose bf16 and fp32 labels differ
(median, 99th percentile, largest), the share of all voxels with a margin below 0.01 and 0.05, and the label
agreement on the voxels with a margin of at least 0.05 ("decided" voxels). A barely trained many-class model
(the imported real-CT one) has near-tied probabilities almost everywhere, so its per-class Dice says little; these
figures say whether bf16 changes decided voxels.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

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


#: top-two probability margins: below NEAR_TIE a voxel is near-tied; from DECIDED on it is "decided"
NEAR_TIE, DECIDED = 0.01, 0.05


def top_two_margin(probabilities: np.ndarray) -> np.ndarray:
    """Largest minus second-largest probability per voxel: float32 (K, ...) → (...), one channel at a time."""
    first = np.maximum(probabilities[0], probabilities[1])
    second = np.minimum(probabilities[0], probabilities[1])
    for p in probabilities[2:]:
        np.maximum(second, np.minimum(first, p), out=second)
        np.maximum(first, p, out=first)
    return first - second


def tie_structure(model: Path, images: Path, bf16_dir: Path, fp32_dir: Path, threads: int) -> dict:
    """Margins of the differing voxels and agreement on decided ones (see the module text), over every case."""
    import SimpleITK as sitk
    import torch

    from sauronnet.inference.inputs import find_cases
    from sauronnet.inference.loading import load_predictor
    from sauronnet.io import read_images

    torch.set_num_threads(threads)
    predictor = load_predictor(model, mirror=False, precision="fp32", backend="torch")
    cases, problems = find_cases([images], len(predictor.plans.channel_names))
    if problems:
        raise ValueError("; ".join(problems))
    differing, margins_low, decided, decided_equal, total, api_mismatch = [], [0, 0], 0, 0, 0, 0
    for case in cases:
        data, geometry = read_images(case.files)
        prediction = predictor.predict(data, geometry, return_probabilities=True)
        margin = top_two_margin(prediction.probabilities)
        prediction.probabilities = None  # 4 bytes × classes × voxels
        labels = {p: sitk.GetArrayFromImage(sitk.ReadImage(str(d / f"{case.case_id}{case.ending}")))
                  for p, d in (("bf16", bf16_dir), ("fp32", fp32_dir))}
        api_mismatch += int((prediction.labels != labels["fp32"]).sum())
        differ = labels["bf16"] != labels["fp32"]
        differing.append(margin[differ])
        margins_low = [margins_low[0] + int((margin < NEAR_TIE).sum()), margins_low[1] + int((margin < DECIDED).sum())]
        sure = margin >= DECIDED
        decided, decided_equal = decided + int(sure.sum()), decided_equal + int((sure & ~differ).sum())
        total += margin.size
    differing = np.concatenate(differing)
    quantiles = (np.quantile(differing, [0.5, 0.99]).tolist() + [float(differing.max())]) if differing.size else []
    return {"differing_voxels": int(differing.size), "differing_margin_median_p99_max": quantiles,
            "share_near_tied": margins_low[0] / total, "share_undecided": margins_low[1] / total,
            "decided_voxel_agreement": decided_equal / decided if decided else float("nan"),
            "api_vs_command_fp32_mismatches": api_mismatch}


def main(argv=None) -> int:
    from sauronnet.plans import Plans
    from sauronnet.precision import cpu_description, native_bf16

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", type=Path, required=True, help="model folders (TRAINER__PRESET__CONFIG)")
    parser.add_argument("--images", type=Path, required=True, help="the images to predict (imagesTs)")
    parser.add_argument("--labels", type=Path, help="reference labels (labelsTs): adds each precision's test Dice")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ties", action="store_true",
                        help="also the tie structure of the disagreements (fp32 top-two probability margins)")
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
        ties = tie_structure(model, args.images, out["bf16"], out["fp32"], args.threads) if args.ties else None
        if ties:
            q = ties["differing_margin_median_p99_max"]
            print(f"{name}: tie structure: {ties['differing_voxels']} voxels differ"
                  + (f", their fp32 top-two probability margin median {q[0]:.2g}, 99th percentile {q[1]:.2g}, "
                     f"largest {q[2]:.2g}" if q else "")
                  + f"; all voxels: {100 * ties['share_near_tied']:.3g} % with a margin < {NEAR_TIE}, "
                  f"{100 * ties['share_undecided']:.3g} % < {DECIDED}; labels equal on "
                  f"{100 * ties['decided_voxel_agreement']:.5f} % of the voxels with a margin >= {DECIDED} "
                  f"(fp32 API vs command: {ties['api_vs_command_fp32_mismatches']} voxels differ)", flush=True)
        row = {"benchmark": "bf16 agreement", "dataset": name, "nnunet": None, "reference": "fp32 prediction"}
        rows += [dict(row, metric="min per-class Dice, bf16 vs fp32 labels", sauron=min(dice.values()), unit="",
                      goal=">= 0.99"),
                 dict(row, metric="sauron_predict wall time, fp32 / bf16", sauron=seconds["fp32"] / seconds["bf16"],
                      unit="x", goal="")]
        if ties:
            rows.append(dict(row, metric=f"voxels with equal labels among those with fp32 top-two margin >= {DECIDED}",
                             sauron=ties["decided_voxel_agreement"], unit="", goal=""))
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
