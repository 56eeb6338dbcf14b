"""Plan parity: SauronNet's ``nnunet`` preset against nnU-Net v2.8.1's planner, field by field.

Usage::

    .venv/bin/python benchmarks/plan_parity.py RAW_DATASET_DIR      # e.g. sauron_data/raw/Dataset001_Demo
    .venv/bin/python benchmarks/plan_parity.py --toy64              # generates the 10-case ~64³ set first
    .venv/bin/python benchmarks/plan_parity.py --real-ct            # the TotalSegmentator sdist CTs

Runs ``sauron_plan_and_preprocess --plan-only`` and, from ``.bench-venv``, ``nnUNetv2_plan_and_preprocess
--no_pp`` on the same raw folder (temporary output folders), then prints one row per field and configuration,
plus the foreground intensity statistics (relative difference). Exit status 1 if any planned field differs or a
statistic is off by more than 1 %.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, OUR_BIN, nnunet_bin, run_measured, toy64_spec, write_rows  # noqa: E402
from sauronnet.interop.nnunet import NORMALIZATION as NORM_NAMES  # noqa: E402
STATS = ("mean", "median", "std", "min", "max", "percentile_00_5", "percentile_99_5")


def nnunet_fields(cfg: dict) -> dict:
    a = cfg["architecture"]["arch_kwargs"]
    return {
        "spacing": [round(float(s), 5) for s in cfg["spacing"]],
        "patch_size": list(cfg["patch_size"]),
        "batch_size": cfg["batch_size"],
        "n_stages": a["n_stages"],
        "features_per_stage": list(a["features_per_stage"]),
        "kernel_sizes": [list(k) for k in a["kernel_sizes"]],
        "strides": [list(s) for s in a["strides"]],
        "normalization": [NORM_NAMES.get(n, n) for n in cfg["normalization_schemes"]],
        "use_mask_for_norm": list(cfg["use_mask_for_norm"]),
        "batch_dice": cfg["batch_dice"],
    }


def our_fields(cfg: dict) -> dict:
    n = cfg["network"]
    return {
        "spacing": [round(float(s), 5) for s in cfg["spacing"]],
        "patch_size": list(cfg["patch_size"]),
        "batch_size": cfg["batch_size"],
        "n_stages": len(n["features_per_stage"]),
        "features_per_stage": list(n["features_per_stage"]),
        "kernel_sizes": [list(k) for k in n["kernel_sizes"]],
        "strides": [list(s) for s in n["strides"]],
        "normalization": list(cfg["normalization_schemes"]),
        "use_mask_for_norm": list(cfg["use_mask_for_norm"]),
        "batch_dice": cfg["batch_dice"],
    }


def run_both(raw_dataset: Path, work: Path) -> tuple[dict, dict, dict, dict]:
    name = raw_dataset.name
    ours, theirs = work / "sauron", work / "nnunet"
    run_measured([OUR_BIN / "sauron_plan_and_preprocess", "-d", name, "--preset", "nnunet", "--plan-only",
                  "--no-progress", "-np", "2"],
                 env={"SAURON_RAW": str(raw_dataset.parent), "SAURON_PREPROCESSED": str(ours),
                      "SAURON_RESULTS": str(work / "r")})
    tool = nnunet_bin("nnUNetv2_plan_and_preprocess")
    if tool is None:
        raise SystemExit("nnU-Net v2 not found in .bench-venv: python3 -m venv .bench-venv && "
                         ".bench-venv/bin/pip install nnunetv2 torch==2.13.0")
    run_measured([tool, "-d", str(int(name[7:10])), "--no_pp", "-np", "2"],
                 env={"nnUNet_raw": str(raw_dataset.parent), "nnUNet_preprocessed": str(theirs),
                      "nnUNet_results": str(work / "r2")})
    load = lambda p: json.loads(p.read_text())  # noqa: E731
    return (load(ours / name / "nnunet" / "plans.json"), load(ours / name / "dataset_fingerprint.json"),
            load(theirs / name / "nnUNetPlans.json"), load(theirs / name / "dataset_fingerprint.json"))


def compare(our_plans: dict, our_fp: dict, nn_plans: dict, nn_fp: dict) -> tuple[list[tuple], bool]:
    rows, ok = [], True
    rows.append(("transpose_forward", "-", nn_plans["transpose_forward"], list(our_plans["transpose_forward"])))
    configs = sorted(set(nn_plans["configurations"]) - {"3d_cascade_fullres"} | set(our_plans["configurations"]))
    for c in configs:
        a = nnunet_fields(nn_plans["configurations"][c]) if c in nn_plans["configurations"] else {}
        b = our_fields(our_plans["configurations"][c]) if c in our_plans["configurations"] else {}
        for field in sorted(set(a) | set(b)):
            rows.append((field, c, a.get(field, "(none)"), b.get(field, "(none)")))
    for r in rows:
        ok &= r[2] == r[3]
    stat_rows = []
    for ch, theirs in nn_fp["foreground_intensity_properties_per_channel"].items():
        mine = our_fp["foreground_intensity_properties_per_channel"][int(ch)]
        for s in STATS:
            rel = abs(mine[s] - theirs[s]) / max(abs(theirs[s]), 1e-12)
            stat_rows.append((f"channel {ch} {s}", theirs[s], mine[s], rel))
            ok &= rel <= 0.01
    return rows + stat_rows, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw_dataset", nargs="?", type=Path, help="a raw DatasetXXX_Name folder")
    parser.add_argument("--toy64", action="store_true", help="generate and use the 10-case ~64³ toy set")
    parser.add_argument("--real-ct", action="store_true", help="the TotalSegmentator sdist CTs (real_ct.py)")
    parser.add_argument("--json", type=Path, help="also write summary rows as JSON (used by make bench)")
    args = parser.parse_args(argv)
    if args.toy64:
        from sauronnet.demo import write_demo_dataset
        args.raw_dataset = write_demo_dataset(CACHE / "raw", toy64_spec(), overwrite=True)
    elif args.real_ct:
        from benchmarks.real_ct import ensure_dataset
        args.raw_dataset = ensure_dataset()
    if args.raw_dataset is None:
        parser.error("give RAW_DATASET_DIR, --toy64 or --real-ct")
    with tempfile.TemporaryDirectory() as tmp:
        rows, ok = compare(*run_both(args.raw_dataset.resolve(), Path(tmp)))
    print(f"Plan parity on {args.raw_dataset.name}: nnU-Net v2.8.1 vs SauronNet --preset nnunet\n")
    print("| field | config | nnU-Net | SauronNet | match |\n|---|---|---|---|---|")
    for r in rows:
        if len(r) == 4 and isinstance(r[3], float) and not isinstance(r[2], list):
            print(f"| {r[0]} | - | {r[1]:.6g} | {r[2]:.6g} | rel. diff {r[3]:.2e} |")
        else:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {'yes' if r[2] == r[3] else 'NO'} |")
    print("\nALL MATCH" if ok else "\nMISMATCH")
    if args.json:
        fields = [r for r in rows if not isinstance(r[-1], float)]
        stats = [r[-1] for r in rows if isinstance(r[-1], float)]
        label = "toy64" if args.toy64 else "real_ct" if args.real_ct else args.raw_dataset.name
        write_rows(args.json, [
            {"benchmark": "plans vs nnU-Net's planner (nnunet preset)", "dataset": label,
             "metric": f"planned fields equal to nnU-Net's (fraction of {len(fields)})", "nnunet": None,
             "sauron": sum(r[2] == r[3] for r in fields) / len(fields), "unit": "", "goal": ">= 1"},
            {"benchmark": "plans vs nnU-Net's planner (nnunet preset)", "dataset": label,
             "metric": "foreground intensity statistics, max relative difference", "nnunet": None,
             "sauron": max(stats), "unit": "", "goal": "<= 0.01"}])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
