"""Prediction with the same weights: ``nnUNetv2_predict_from_modelfolder`` vs ``sauron_predict`` on an imported model.

Usage::

    .venv/bin/python benchmarks/predict_vs_nnunet.py [--toy64] [--real-ct] [-n 2] [--threads 2] [--json FILE]

For each dataset nnU-Net v2 (``.bench-venv``) plans it and trains its own PlainConvUNet for a few iterations
(``nnunet_train_briefly.py``; enough for a non-trivial segmentation, cached in ``benchmarks/cache/predict``),
``sauron_import_nnunet`` converts that model, and both tools segment the same images — same fold, same step 0.5,
mirroring TTA on and off — each run as a user would type it (start-up, reading, preprocessing, sliding window,
resampling and writing all included; each tool's default worker processes; torch threads fixed). Runs alternate
(nnU-Net, SauronNet, nnU-Net, ...); medians of wall time and of peak memory (summed PSS of the process tree).
Agreement: per-class Dice between the two tools' label maps (minimum over cases) and, from one extra run of each
without TTA, the absolute difference of the exported softmax probabilities (max and 99.9th percentile over
voxels). The largest differences sit within a few voxels of tile edges, where nnU-Net accumulates Gaussian-weighted
logits in float16 and the weights (~1e-7 at a tile's border) are float16 subnormals; SauronNet accumulates in
float32. Goal: time ratio ≤ 0.7 (issue 11: ≤ 0.35 on the real CT). ``--precision`` is passed to ``sauron_predict``
(default ``auto``: bf16 on a CPU with native bfloat16, fp32 elsewhere; the row names which ran).

Datasets: ``--toy64`` (nnU-Net's ~64³ toy plan: patch 64×80×64, widths 32…320; fold 0 trained 10 iterations, 2
test images) and ``--real-ct`` (the TotalSegmentator 2.18.0 sdist CTs, 117 labels, fold ``all`` trained 4
iterations — 6 minutes and 12 GB for nnU-Net here; the unlabelled 233×167×191 CT at 1.5 mm is the test image; TTA
off only unless ``--real-ct-tta``: with TTA one run takes ~15 minutes per tool). A barely trained 118-class
network has near-tied logits almost everywhere, so its argmax flips with float rounding: the real CT's agreement
rows show how close the two implementations are numerically, not a clinical difference.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (BENCH_VENV, CACHE, OUR_BIN, build_nnunet_model, compare_predictions, cpu_model,  # noqa: E402,E501
                               nnunet_bin, run_measured, threads_env, toy64_spec, write_rows)

WORK = CACHE / "predict"


def prepare(which: str, rebuild: bool, threads: int) -> tuple[Path, Path, list[int], str]:
    """(nnU-Net model folder, input folder, foreground labels, fold) — builds the nnU-Net model once."""
    from sauronnet.demo import write_demo_dataset

    root = WORK / which
    if which == "toy64":
        spec = toy64_spec()
        fold, iters, dataset_id = "0", 10, spec.dataset_id
        if rebuild or not (root / "raw").is_dir():
            write_demo_dataset(root / "raw", spec, overwrite=True)
        labels = [1, 2]
    else:
        from benchmarks.real_ct import N_LABELS, ensure_dataset
        src = ensure_dataset()
        fold, iters, dataset_id = "all", 4, int(src.name[7:10])
        if rebuild or not (root / "raw").is_dir():
            shutil.rmtree(root / "raw", ignore_errors=True)
            shutil.copytree(src, root / "raw" / src.name)
        labels = list(range(1, N_LABELS + 1))
    raw = next((root / "raw").glob(f"Dataset{dataset_id:03d}_*"))
    model = root / "nnunet_results" / raw.name / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    if rebuild or not (model / f"fold_{fold}" / "checkpoint_final.pth").is_file():
        shutil.rmtree(root / "nnunet_preprocessed", ignore_errors=True)
        shutil.rmtree(root / "nnunet_results", ignore_errors=True)
        model = build_nnunet_model(root, dataset_id, "3d_fullres", fold, iters=iters, threads=threads)
    return model, raw / "imagesTs", labels, fold


def measure(which: str, repeats: int, threads: int, rebuild: bool, tta_settings=(False, True),
            precision: str = "auto") -> list[dict]:
    model, images, labels, fold = prepare(which, rebuild, threads)
    imported = WORK / which / "imported"
    run_measured([OUR_BIN / "sauron_import_nnunet", "-m", model, "-o", imported, "-f", fold, "--overwrite"])
    n_cases = len(list(images.glob("*_0000.nii.gz")))
    env = threads_env(threads)
    nn_tool = nnunet_bin("nnUNetv2_predict_from_modelfolder")

    def command(who: str, out: Path, tta: bool, probabilities: bool = False) -> list:
        if who == "nnunet":
            return [nn_tool, "-i", images, "-o", out, "-m", model, "-f", fold, "-step_size", "0.5", "-device", "cpu",
                    *([] if tta else ["--disable_tta"]), *(["--save_probabilities"] if probabilities else [])]
        return [OUR_BIN / "sauron_predict", "-i", images, "-o", out, "-m", imported, "-f", fold, "--step", "0.5",
                "--threads", str(threads), "--no-progress", "--no-postprocessing", "--precision", precision,
                *([] if tta else ["--disable-tta"]), *(["--save-probabilities"] if probabilities else [])]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for tta in tta_settings:
            runs = {"nnunet": [], "sauron": []}
            for _ in range(repeats):
                for who in runs:
                    out = tmp / f"{who}_{tta}"
                    shutil.rmtree(out, ignore_errors=True)
                    wall, peak, _ = run_measured(command(who, out, tta), env)
                    runs[who].append((wall, peak))
            agree = compare_predictions(tmp / f"sauron_{tta}", tmp / f"nnunet_{tta}", labels)
            med = {k: (statistics.median(w for w, _ in v), statistics.median(p for _, p in v)) for k, v in runs.items()}
            setting = f"TTA {'on' if tta else 'off'}, ours --precision {precision}"
            rows.append({"benchmark": f"prediction, same weights ({setting})", "dataset": which,
                         "metric": f"wall time for {n_cases} case(s)", "nnunet": med["nnunet"][0],
                         "sauron": med["sauron"][0], "unit": "s", "goal": "<= 0.7"})
            rows.append({"benchmark": f"prediction, same weights ({setting})", "dataset": which,
                         "metric": "peak memory (PSS, process tree)", "nnunet": med["nnunet"][1] / 2**20,
                         "sauron": med["sauron"][1] / 2**20, "unit": "MiB", "goal": ""})
            dice = list(agree["dice"].values())
            # the real CT model is barely trained: near-tied logits make its argmax flip with float rounding
            goal, note = (">= 0.99", "") if which == "toy64" else ("", " (barely trained, near-tied logits)")
            rows.append({"benchmark": f"prediction, same weights ({setting})", "dataset": which,
                         "metric": f"Dice between the two segmentations, min over {len(dice)} classes{note}",
                         "nnunet": None, "sauron": min(dice), "unit": "", "goal": goal})
            if len(dice) > 2:
                rows.append({"benchmark": f"prediction, same weights ({setting})", "dataset": which,
                             "metric": f"Dice between the two segmentations, mean over {len(dice)} classes{note}",
                             "nnunet": None, "sauron": sum(dice) / len(dice), "unit": "", "goal": goal})
            rows.append({"benchmark": f"prediction, same weights ({setting})", "dataset": which,
                         "metric": "voxels with the same label in both", "nnunet": None,
                         "sauron": agree["voxel_agreement"], "unit": "", "goal": ""})
        if which == "toy64":  # the real CT's 118-class probabilities would be GBs per tool
            for who in ("nnunet", "sauron"):
                run_measured(command(who, tmp / f"{who}_probs", False, probabilities=True), env)
            agree = compare_predictions(tmp / "sauron_probs", tmp / "nnunet_probs", labels)
            for key, what in (("prob_max_abs_diff", "max"), ("prob_p999_abs_diff", "99.9th percentile")):
                rows.append({"benchmark": f"prediction, same weights (TTA off, ours --precision {precision})",
                             "dataset": which,
                             "metric": f"softmax abs difference, {what} over voxels", "nnunet": None,
                             "sauron": agree[key], "unit": "", "goal": ""})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy64", action="store_true")
    parser.add_argument("--real-ct", action="store_true")
    parser.add_argument("-n", "--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both predictors")
    parser.add_argument("--rebuild", action="store_true", help="retrain the cached nnU-Net models")
    parser.add_argument("--real-ct-tta", action="store_true",
                        help="also time the real CT with TTA (8 network passes per tile: ~15 min per run and tool)")
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"],
                        help="sauron_predict's --precision; several give one set of rows each (bf16 needs a CPU "
                             "with native bfloat16)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON (used by make bench)")
    args = parser.parse_args(argv)
    if nnunet_bin("nnUNetv2_predict_from_modelfolder") is None:
        raise SystemExit(f"nnU-Net v2 not found in {BENCH_VENV}: run `make bench-venv`")
    which = [w for w, on in (("toy64", args.toy64), ("real_ct", args.real_ct)) if on]
    if not which:
        parser.error("give --toy64 and/or --real-ct")
    tta = {"toy64": (False, True), "real_ct": (False, True) if args.real_ct_tta else (False,)}
    rows = [r for w in which for p in args.precision
            for r in measure(w, args.repeats, args.threads, args.rebuild, tta[w], p)]
    print(f"prediction with the same weights, nnUNetv2_predict_from_modelfolder vs sauron_predict (imported model), "
          f"step 0.5, {args.threads} torch threads, median of {args.repeats} interleaved runs, CPU: {cpu_model()}")
    print("| setting | dataset | metric | nnU-Net | SauronNet | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['sauron'] / r['nnunet']:.3f}" if r["nnunet"] else ""
        nn = f"{r['nnunet']:.2f} {r['unit']}" if r["nnunet"] is not None else ""
        print(f"| {r['benchmark']} | {r['dataset']} | {r['metric']} | {nn} | {r['sauron']:.4g} {r['unit']} | {ratio} |")
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
