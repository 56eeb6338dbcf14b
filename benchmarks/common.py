"""Helpers shared by the benchmark scripts: the nnU-Net peer venv, synthetic datasets, measured runs.

nnU-Net v2 lives in its own venv (``.bench-venv``: ``pip install nnunetv2 torch==2.13.0``) and is only ever run
as a subprocess, so it never becomes a dependency of SauronNet.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = Path(os.environ.get("SAURON_BENCH_VENV", ROOT / ".bench-venv"))
OUR_BIN = ROOT / ".venv" / "bin"
CACHE = ROOT / "benchmarks" / "cache"


def nnunet_bin(tool: str) -> Path | None:
    """Path of an nnU-Net console script in the peer venv, or None when it is not installed."""
    p = BENCH_VENV / "bin" / tool
    return p if p.exists() else None


def toy64_spec():
    """The 10-case ~64³ set with 1 × 1 × 2.5 mm voxels used for nnU-Net parity (DESIGN.md §4).

    Noise fills the background, so cropping keeps the whole ~62 × 70 × 62 (x, y, z) volume. Two test images
    (``imagesTs``/``labelsTs``) serve the prediction and pruning benchmarks; planning never reads them.
    """
    from sauronnet.demo import DemoSpec
    return DemoSpec(dataset_id=2, name="Toy64", n_train=10, n_test=2, size_xyz=(62, 70, 62), size_jitter=2,
                    background_noise=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _tree_memory(pid: int) -> int:
    """Memory (bytes) of ``pid`` and all its descendants: the sum of their PSS (proportional set size).

    PSS splits pages shared between processes (forked workers, shared libraries) among them, so the sum is
    what the tree really occupies; plain RSS would count every shared page once per process.
    """
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def run_measured(cmd: Sequence[str], env: dict | None = None, poll_s: float = 0.1) -> tuple[float, int, str]:
    """Runs ``cmd``; returns wall seconds, peak memory of its process tree (summed PSS, bytes), and its output.

    Raises:
        RuntimeError: if the command fails (its output is included).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(map(str, cmd)), env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_memory(proc.pid))
        time.sleep(poll_s)
    out = proc.stdout.read() if proc.stdout else ""
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{out[-4000:]}")
    return wall, peak, out


def preprocessed_image(image: Path, predictor):
    """One image file as ``predictor``'s network sees it (preprocessed with its plans), for timing
    ``Predictor.predict_preprocessed`` without the reading and resampling around it."""
    from sauronnet.inference.predictor import prepare_case
    from sauronnet.io import read_images
    data, geometry = read_images([image])
    return prepare_case(data, geometry, predictor.plans, predictor.config)[0]


def uniform_plan_network(plans_path: Path, configuration: str, keep: float):
    """(plans, an untrained network of the plan at ``keep`` of every layer's planned width, deep supervision off):
    timing does not depend on the weights, so any plan can be timed without training a model."""
    from sauronnet.networks.unet import build_network, default_widths
    from sauronnet.plans import Plans
    from sauronnet.pruning.targets import uniform_widths

    plans = Plans.load(plans_path)
    cfg = plans.configuration(configuration)
    widths = uniform_widths(default_widths(cfg.network), 1 - keep)
    return plans, build_network(cfg.network, len(plans.channel_names), plans.num_classes, widths,
                                deep_supervision=False, seed=0)


def add_window_timing_args(parser, models_help: str) -> None:
    """The options of the benchmarks that time the sliding window: models, or ``--plans`` with ``-c`` and ``--keep``
    (untrained networks, :func:`uniform_plan_network`); images, threads, repeats and cases."""
    parser.add_argument("models", type=Path, nargs="*", help=models_help)
    parser.add_argument("--plans", type=Path, help="instead of models: a plans.json whose untrained networks run")
    parser.add_argument("-c", "--configuration", default="3d_fullres", help="with --plans (default 3d_fullres)")
    parser.add_argument("--keep", type=float, nargs="+", default=[1.0],
                        help="with --plans: fractions of the planned widths kept in every layer (default 1)")
    parser.add_argument("-i", "--images", type=Path, required=True, help="a folder of images (CASE_0000.nii.gz)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", type=int, default=2)


def parse_window_timing_args(parser, argv) -> tuple:
    """(args, the first ``--cases`` images), or the parser's error for models and --plans together or neither, or no
    images."""
    args = parser.parse_args(argv)
    if bool(args.models) == bool(args.plans):
        parser.error("give either models or --plans (exactly one of the two)")
    images = sorted(args.images.glob("*_0000.*"))[:args.cases]
    if not images:
        parser.error(f"{args.images}: no CASE_0000 images")
    return args, images


def write_rows(path: Path, rows: list[dict]) -> None:
    """Writes a benchmark's result rows as JSON (``make bench`` collects them into benchmarks/results/latest.md).

    A row: ``benchmark``, ``dataset``, ``metric``, ``nnunet`` (the reference's value, or None), ``sauron``,
    ``unit`` and ``goal`` (text, e.g. "<= 0.7" for the ratio).
    """
    import json
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(rows, indent=1))


def threads_env(n: int) -> dict:
    return {k: str(n) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def nnunet_env(root: Path) -> dict:
    """nnU-Net's three data roots under ``root`` (raw is ``root/raw``)."""
    return {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "nnunet_preprocessed"),
            "nnUNet_results": str(root / "nnunet_results")}


def build_nnunet_model(root: Path, dataset_id: int, configuration: str = "3d_fullres", fold: str = "0",
                       iters: int = 20, base_width: int | None = None, threads: int = 2,
                       bin_dir: Path | None = None) -> Path:
    """A genuine nnU-Net v2 model of the raw dataset ``root/raw/DatasetXXX``: nnU-Net plans and preprocesses it,
    then ``nnunet_train_briefly.py`` trains ``iters`` iterations (optionally narrower: ``base_width``).

    Args:
        bin_dir: the peer venv's ``bin`` (default ``.bench-venv/bin``).

    Returns:
        The nnU-Net model folder ``root/nnunet_results/DatasetXXX/nnUNetTrainer__nnUNetPlans__CONFIG``.
    """
    bin_dir = Path(bin_dir) if bin_dir else BENCH_VENV / "bin"
    env = {**nnunet_env(root), **threads_env(threads)}
    run_measured([bin_dir / "nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", configuration,
                  "-np", "2"], env)
    cmd = [bin_dir / "python", ROOT / "benchmarks" / "nnunet_train_briefly.py", str(dataset_id), configuration,
           fold, "--iters", str(iters), "--threads", str(threads)]
    run_measured(cmd + (["--base-width", str(base_width)] if base_width else []), env)
    name = next((root / "raw").glob(f"Dataset{dataset_id:03d}_*")).name
    return root / "nnunet_results" / name / f"nnUNetTrainer__nnUNetPlans__{configuration}"


def compare_predictions(ours: Path, theirs: Path, labels: Sequence[int]) -> dict:
    """Agreement of two folders of label maps (and ``CASE.npz`` probabilities when both have them).

    Returns:
        ``{"cases": n, "dice": {label: min over cases}, "voxel_agreement": fraction of equal voxels (all cases),
        "prob_max_abs_diff" and "prob_p999_abs_diff": max and 99.9th percentile over voxels of the probability
        difference (None without probabilities)}``; a label absent from both maps of a case does not count.
    """
    import numpy as np
    import SimpleITK as sitk

    from sauronnet.evaluation import dice_per_class

    cases = sorted(p.name[:-len(".nii.gz")] for p in Path(theirs).glob("*.nii.gz"))
    if not cases:
        raise FileNotFoundError(f"{theirs}: no .nii.gz predictions")
    worst = {int(c): 1.0 for c in labels}
    diff, p999, equal, total = None, None, 0, 0
    for case in cases:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(ours) / f"{case}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(theirs) / f"{case}.nii.gz")))
        equal, total = equal + int((a == b).sum()), total + a.size
        for label, d in dice_per_class(a, b, labels).items():
            if d == d:  # NaN: the label is in neither map
                worst[label] = min(worst[label], d)
        pa, pb = Path(ours) / f"{case}.npz", Path(theirs) / f"{case}.npz"
        if pa.is_file() and pb.is_file():
            delta = np.abs(np.load(pa)["probabilities"] - np.load(pb)["probabilities"]).max(0)
            d, q = float(delta.max()), float(np.percentile(delta, 99.9))
            diff, p999 = (d, q) if diff is None else (max(diff, d), max(p999, q))
    return {"cases": len(cases), "dice": worst, "voxel_agreement": equal / total, "prob_max_abs_diff": diff,
            "prob_p999_abs_diff": p999}
