"""Wall time and peak RSS of ``sauron_plan_and_preprocess`` vs ``nnUNetv2_plan_and_preprocess -c 3d_fullres``.

Usage::

    .venv/bin/python benchmarks/preprocess_vs_nnunet.py [RAW_DATASET_DIR ...] [--toy64] [--demo] [--real-ct]
                                                          [-np 2] [-n 3]

Both commands run on the same raw dataset with the same number of worker processes, interleaved
(ours, nnU-Net, ours, nnU-Net, ...), each into a fresh output folder, start-up included. Peak memory is the
largest sum over the whole process tree (workers included) of each process' PSS — resident memory with shared
pages split among the processes sharing them — sampled every 20 ms from /proc. Prints medians and the ratios
(goal: time ≤ 1/3, peak memory ≤ 1/2 of nnU-Net's).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (CACHE, OUR_BIN, cpu_model, nnunet_bin, run_measured, threads_env, toy64_spec,  # noqa: E402,E501
                               write_rows)


def measure(raw_dataset: Path, n_proc: int, repeats: int, preset: str = "nnunet") -> dict:
    name = raw_dataset.name
    dataset_id = str(int(name[7:10]))
    tool = nnunet_bin("nnUNetv2_plan_and_preprocess")
    if tool is None:
        raise SystemExit("nnU-Net v2 not found in .bench-venv: python3 -m venv .bench-venv && "
                         ".bench-venv/bin/pip install nnunetv2 torch==2.13.0")
    results = {"sauron": [], "nnunet": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for who in ("sauron", "nnunet"):
                out = Path(tmp) / who
                shutil.rmtree(out, ignore_errors=True)
                if who == "sauron":
                    cmd = [OUR_BIN / "sauron_plan_and_preprocess", "-d", dataset_id, "--preset", preset,
                           "-c", "3d_fullres", "-np", str(n_proc), "--no-progress"]
                    env = {"SAURON_RAW": str(raw_dataset.parent), "SAURON_PREPROCESSED": str(out / "pre"),
                           "SAURON_RESULTS": str(out / "res")}
                else:
                    cmd = [tool, "-d", dataset_id, "-c", "3d_fullres", "-np", str(n_proc), "-npfp", str(n_proc)]
                    env = {"nnUNet_raw": str(raw_dataset.parent), "nnUNet_preprocessed": str(out / "pre"),
                           "nnUNet_results": str(out / "res")}
                wall, rss, _ = run_measured(cmd, env={**env, **threads_env(1)})
                results[who].append((wall, rss))
    return results


def medians(results: dict) -> dict:
    return {k: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for k, v in results.items()}


def summarise(name: str, med: dict) -> list[str]:
    (tw, tr), (nw, nr) = med["sauron"], med["nnunet"]
    return [f"| {name} | {nw:.2f} s | {tw:.2f} s | {tw / nw:.3f} | {nr / 2**20:.0f} MiB | {tr / 2**20:.0f} MiB | "
            f"{tr / nr:.3f} |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw_datasets", nargs="*", type=Path)
    parser.add_argument("--toy64", action="store_true", help="add the generated 10-case ~64³ set")
    parser.add_argument("--demo", action="store_true", help="add the generated demo dataset")
    parser.add_argument("--real-ct", action="store_true",
                        help="add the TotalSegmentator 2.18.0 sdist CT cases (benchmarks/real_ct.py)")
    parser.add_argument("-np", type=int, default=2, help="worker processes for both tools")
    parser.add_argument("-n", "--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON (used by make bench)")
    args = parser.parse_args(argv)
    from sauronnet.demo import DemoSpec, write_demo_dataset
    datasets = list(args.raw_datasets)
    if args.toy64:
        datasets.append(write_demo_dataset(CACHE / "raw", toy64_spec(), overwrite=True))
    if args.demo:
        datasets.append(write_demo_dataset(CACHE / "raw", DemoSpec(), overwrite=True))
    if args.real_ct:
        from benchmarks.real_ct import ensure_dataset
        datasets.append(ensure_dataset())
    if not datasets:
        parser.error("give RAW_DATASET_DIR(s), --toy64, --demo or --real-ct")
    lines = [f"plan+preprocess (3d_fullres), -np {args.np}, median of {args.repeats} interleaved runs, "
             f"1 BLAS/OpenMP thread per process, CPU: {cpu_model()}", "",
             "| dataset | nnU-Net time | SauronNet time | time ratio | nnU-Net peak PSS | SauronNet peak PSS "
             "| memory ratio |",
             "|---|---|---|---|---|---|---|"]
    rows = []
    for d in datasets:
        med = medians(measure(d.resolve(), args.np, args.repeats))
        lines += summarise(d.name, med)
        what = f"plan+preprocess 3d_fullres (-np {args.np})"
        label = {"Dataset002_Toy64": "toy64", "Dataset010_TotalSegCT": "real_ct"}.get(d.name, d.name)
        rows += [{"benchmark": what, "dataset": label, "metric": "wall time", "nnunet": med["nnunet"][0],
                  "sauron": med["sauron"][0], "unit": "s", "goal": "<= 0.33"},
                 {"benchmark": what, "dataset": label, "metric": "peak memory (PSS, process tree)",
                  "nnunet": med["nnunet"][1] / 2**20, "sauron": med["sauron"][1] / 2**20, "unit": "MiB",
                  "goal": "<= 0.5"}]
    print("\n".join(lines))
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
