"""How close the networks run to what this CPU can do: GEMM and Conv3d rates, and network forward rates.

Usage::

    .venv/bin/python benchmarks/cpu_limit.py [--threads 2] [--repeats 3] [--json FILE]
        [--parts chip output-channels narrow networks]

Measured in one run, same threads, medians of ``--repeats`` timed calls after one warm-up:

- the chip: a 2048² GEMM in fp32 and bf16, and a Conv3d 32→32, 3³ on 64×96×96 in fp32, fp32 channels-last, bf16
  autocast and bf16 channels-last. On a CPU without native bfloat16 (no AMX-BF16 / AVX512-BF16) the bf16 kernels
  are reference loops; they are measured on a 512² GEMM and an 8³·16-channel conv instead, marked "emulated";
- output channels: a Conv3d 8→c, 3³ on 48×96×112 for c = 1…16, forward: oneDNN's AVX2 kernels compute output
  channels in blocks of 8 (the vector width in floats), so the time steps at the blocks instead of falling with c:
  a layer pruned below 8 channels runs no faster (``--min-channels``);
- narrow convolutions, as pruning leaves them: a Conv3d c→c, 3³ on 48×96×112 for c = 4, 8, 16, 32, its time and
  rate, forward (inference) and forward + backward (training, weights and inputs) in the default layout and in
  channels-last. A pruned network's time falls with its width, its FLOPs with the square of it: the rate shows
  how much of the FLOP reduction a pruned layer turns into speed; for the default-layout forward also oneDNN's own
  timing of the call (``ONEDNN_VERBOSE``, in a subprocess): the convolution against the reorders that convert the
  plain NCDHW tensors to its blocked layout and back at every call, and the instance norm after it (the conv blocks'
  group norm in the default layout, ``nn.InstanceNorm3d`` in channels-last, where the group-norm kernel is inexact):
  what channels-last saves in the convolution and what it costs in the norm;
- the networks: one inference forward (batch 1, deep supervision off, as each sliding-window tile) of the toy64
  ``nnunet`` 3D plan (patch 64×80×64, widths 32…320) and of its ``cpu`` plan, unpruned and Sauron-pruned (the widths
  of ``--pruned CKPT``, default: the newest pruned cpu-plan checkpoint of ``benchmarks/sauron_compression.py``),
  each as SauronNet ran it before (PyTorch's default dispatch and ``nn.InstanceNorm``: ``legacy``) and now, in fp32,
  fp32 channels-last and — with native bf16 — bf16 channels-last. The rate is FLOPs counted by
  ``FlopCounterMode`` over seconds, and its fraction of the fp32 and of the bf16 GEMM rate (goal: the nnunet plan at
  ≥ 50 % of the bf16 GEMM rate).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, ROOT, cpu_model, toy64_spec, write_rows  # noqa: E402

WORK = CACHE / "cpu_limit"


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.inference_mode()
def gemm_rate(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, repeats) / 1e9


@torch.inference_mode()
def conv_rate(channels: int, shape: tuple[int, int, int], bf16: bool, channels_last: bool, repeats: int) -> float:
    conv = torch.nn.Conv3d(channels, channels, 3, padding=1)
    x = torch.randn(1, channels, *shape)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last_3d), x.to(memory_format=torch.channels_last_3d)
    flops = 2 * channels * channels * 27 * shape[0] * shape[1] * shape[2]

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(x)
    return flops / timed(run, repeats) / 1e9


def narrow_conv_seconds(channels: int, shape: tuple[int, int, int], backward: bool, channels_last: bool,
                        repeats: int, out_channels: int | None = None) -> float:
    """Seconds of one oneDNN Conv3d c→c (or c→``out_channels``), 3³ (as the conv blocks call it), forward or
    forward + backward."""
    out_channels = out_channels or channels
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    x = torch.randn(1, channels, *shape).contiguous(memory_format=fmt).requires_grad_(backward)
    w = torch.randn(out_channels, channels, 3, 3, 3).contiguous(memory_format=fmt).requires_grad_(backward)
    b = torch.zeros(out_channels, requires_grad=backward)

    def forward():
        return torch.ops.aten.mkldnn_convolution(x, w, b, [1] * 3, [1] * 3, [1] * 3, 1)
    if not backward:
        with torch.inference_mode():
            return timed(forward, repeats)
    grad = torch.randn_like(forward())
    return timed(lambda: torch.autograd.grad(forward(), (x, w, b), grad), repeats)


def onednn_split(channels: int, shape: tuple[int, int, int], threads: int, repeats: int) -> dict[str, float]:
    """oneDNN's own milliseconds per default-layout narrow conv forward (:func:`narrow_conv_seconds`), by primitive:
    ``convolution`` and ``reorder`` (layout conversions of input, output and weights), from ``ONEDNN_VERBOSE`` in a
    subprocess (the variable is read when oneDNN starts)."""
    code = (f"import sys, torch; sys.path.insert(0, {str(ROOT)!r}); torch.set_num_threads({threads}); "
            f"from benchmarks.cpu_limit import narrow_conv_seconds; "
            f"narrow_conv_seconds({channels}, {tuple(shape)}, False, False, {repeats})")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_VERBOSE": "1"},
                         capture_output=True, text=True, check=True).stdout
    totals: dict[str, float] = {}
    for line in out.splitlines():
        fields = line.split(",")
        if line.startswith("onednn_verbose") and len(fields) > 6 and fields[3] == "exec":
            totals[fields[5]] = totals.get(fields[5], 0.0) + float(fields[-1])
    calls = repeats + 1  # the warm-up call too
    if "convolution" not in totals:
        raise RuntimeError(f"no oneDNN convolution in ONEDNN_VERBOSE's output: {out[-500:]!r}")
    return {kind: ms / calls for kind, ms in totals.items()}


@torch.inference_mode()
def norm_seconds(channels: int, shape: tuple[int, int, int], channels_last: bool, repeats: int) -> float:
    """Seconds of the conv blocks' instance norm (:func:`sauronnet.networks.cpu_kernels.instance_norm`) on c
    channels: the group-norm kernel in the default layout, ``nn.InstanceNorm3d`` in channels-last."""
    from sauronnet.networks.cpu_kernels import instance_norm
    norm = torch.nn.InstanceNorm3d(channels, affine=True)
    x = torch.randn(1, channels, *shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    return timed(lambda: instance_norm(x, norm), repeats)


def toy64_plans() -> dict:
    """The toy64 dataset's ``nnunet`` and ``cpu`` plans (planned once into the cache; nothing is preprocessed)."""
    from planners import PLANNERS
    from sauronnet.dataset import load_raw_dataset
    from sauronnet.demo import write_demo_dataset
    from sauronnet.fingerprint import extract_fingerprint
    from sauronnet.plans import Plans

    out = {}
    spec = toy64_spec()
    raw = WORK / "raw" / f"Dataset{spec.dataset_id:03d}_{spec.name}"
    for preset in ("nnunet", "cpu"):
        path = WORK / f"plans_{preset}.json"
        if not path.is_file():
            if not raw.is_dir():
                write_demo_dataset(WORK / "raw", spec, overwrite=True)
            ds = load_raw_dataset(raw)
            PLANNERS[preset]().plan(ds, extract_fingerprint(ds, progress=False)).save(path)
        out[preset] = Plans.load(path)
    return out


def newest_pruned_checkpoint() -> Path | None:
    found = sorted((CACHE / "sauron_compression").glob(
        "*/results/3d_fullres_cpu_*sauron*/*/SauronTrainer__cpu__3d_fullres/fold_all/checkpoint_final.pth"),
        key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def legacy_forward(block, x):
    """The conv block as SauronNet ran it before cpu_kernels: PyTorch's dispatch and nn.InstanceNorm."""
    return block.nonlin(block.norm(block.conv(x)))


@torch.inference_mode()
def network_rate(net, patch, mode: str, repeats: int) -> tuple[float, float]:
    """(seconds, GFLOP/s) of one batch-1 forward in ``mode``: legacy, fp32, fp32_cl or bf16_cl."""
    from sauronnet.networks import unet
    from sauronnet.networks.complexity import measure

    flops = measure(net, patch).flops
    channels_last = mode.endswith("_cl")
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = torch.randn(1, net.in_channels, *patch).to(memory_format=fmt)
    original = unet.ConvBlock.forward
    if mode == "legacy":
        unet.ConvBlock.forward = legacy_forward
    try:
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.startswith("bf16")):
                net(x)
        seconds = timed(run, repeats)
    finally:
        unet.ConvBlock.forward = original
        net.to(memory_format=torch.contiguous_format)
    return seconds, flops / seconds / 1e9


#: what ``--parts`` can choose
PARTS = ("chip", "output-channels", "narrow", "networks")


def main(argv=None) -> int:
    from sauronnet.precision import cpu_description, native_bf16

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pruned", type=Path, help="a pruned cpu-plan checkpoint (default: the newest cached one)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON (used by make bench)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    native = native_bf16()
    emulated = "" if native else " (emulated: no native bf16)"
    rows = []

    def row(metric: str, value: float, unit: str = "GFLOP/s", goal: str = "", dataset: str = "chip") -> None:
        rows.append({"benchmark": "CPU limit", "dataset": dataset, "metric": metric, "nnunet": None,
                     "sauron": value, "unit": unit, "goal": goal})
        print(f"{dataset:>26} | {metric:<58} | {value:10.3f} {unit} {goal}", flush=True)

    print(f"CPU: {cpu_model()} — {cpu_description()}; {args.threads} torch threads; torch {torch.__version__}")
    if "chip" in args.parts or "networks" in args.parts:  # the networks' rates are fractions of the GEMM rates
        fp32_gemm = gemm_rate(torch.float32, 2048, args.repeats)
        row("GEMM 2048² fp32", fp32_gemm)
        bf16_gemm = gemm_rate(torch.bfloat16, 2048 if native else 512, args.repeats)
        row(f"GEMM {'2048' if native else '512'}² bf16{emulated}", bf16_gemm)
    if "chip" in args.parts:
        chip_convs(native, emulated, args.repeats, row)
    if "output-channels" in args.parts:
        output_channels(args.repeats, row)
    if "narrow" in args.parts:
        narrow_layers(args.threads, args.repeats, row)
    if "networks" in args.parts:
        networks(args.pruned, native, fp32_gemm, bf16_gemm, args.repeats, row)
    if args.json:
        write_rows(args.json, rows)
    return 0


def output_channels(repeats: int, row) -> None:
    """A Conv3d 8→c, 3³ on 48×96×112, forward in the default layout, for c = 1…16 (the module docstring)."""
    shape = (48, 96, 112)
    for c in (1, 2, 4, 6, 8, 9, 12, 16):
        t = narrow_conv_seconds(8, shape, False, False, repeats, out_channels=c)
        row(f"Conv3d 8→{c} 3³ on {'×'.join(map(str, shape))} forward: time", 1e3 * t, "ms",
            dataset=f"output channels, {torch.backends.cpu.get_cpu_capability()}")


def chip_convs(native: bool, emulated: str, repeats: int, row) -> None:
    for bf16, cl in ((False, False), (False, True), (True, False), (True, True)):
        shape, ch = ((64, 96, 96), 32) if native or not bf16 else ((8, 8, 8), 16)
        name = f"Conv3d {ch}→{ch} 3³ on {'×'.join(map(str, shape))} {'bf16 autocast' if bf16 else 'fp32'}" \
               f"{' channels-last' if cl else ''}{emulated if bf16 else ''}"
        row(name, conv_rate(ch, shape, bf16, cl, repeats))


def narrow_layers(threads: int, repeats: int, row) -> None:
    shape = (48, 96, 112)
    for backward in (False, True):
        for channels in (4, 8, 16, 32):
            for cl in (False, True):
                t = narrow_conv_seconds(channels, shape, backward, cl, repeats)
                flops = (3 if backward else 1) * 2 * channels * channels * 27 * shape[0] * shape[1] * shape[2]
                what = f"Conv3d {channels}→{channels} 3³ on {'×'.join(map(str, shape))} " \
                       f"{'forward+backward' if backward else 'forward'}{' channels-last' if cl else ''}"
                row(f"{what}: time", 1e3 * t, "ms", dataset="narrow layers")
                row(f"{what}: rate", flops / t / 1e9, dataset="narrow layers")
                if not backward:
                    row(f"{what}: instance norm after it", 1e3 * norm_seconds(channels, shape, cl, repeats),
                        "ms", dataset="narrow layers")
                if not backward and not cl:
                    split = onednn_split(channels, shape, threads, repeats)
                    for kind in ("convolution", "reorder"):
                        row(f"{what}: oneDNN {kind}", split.get(kind, 0.0), "ms", dataset="narrow layers")


def networks(pruned: Path | None, native: bool, fp32_gemm: float, bf16_gemm: float, repeats: int, row) -> None:
    from sauronnet.checkpoint import load_checkpoint
    from sauronnet.networks.unet import build_network

    plans = toy64_plans()
    pruned = pruned or newest_pruned_checkpoint()
    nets = []
    for preset in ("nnunet", "cpu"):
        cfg = plans[preset].configuration("3d_fullres")
        make = lambda widths=None: build_network(cfg.network, 1, plans[preset].num_classes, widths,  # noqa: E731
                                                 deep_supervision=False).eval()
        nets.append((f"toy64 {preset} plan", make(), cfg.patch_size))
        if preset == "cpu" and pruned is not None:
            widths = load_checkpoint(pruned)["widths"]
            if set(widths) == set(make().widths()):
                nets.append((f"toy64 cpu plan, Sauron-pruned ({sum(widths.values())} ch)", make(widths),
                             cfg.patch_size))
    modes = ["legacy", "fp32", "fp32_cl"] + (["bf16_cl"] if native else [])
    for name, net, patch in nets:
        seconds = {}
        for mode in modes:
            seconds[mode], rate = network_rate(net, patch, mode, repeats)
            row(f"forward {mode}: rate", rate, dataset=name)
            row(f"forward {mode}: fraction of the fp32 GEMM rate", rate / fp32_gemm, "", dataset=name)
            if native:
                goal = ">= 0.5" if "nnunet" in name and mode == "bf16_cl" else ""
                row(f"forward {mode}: fraction of the bf16 GEMM rate", rate / bf16_gemm, "", goal, dataset=name)
        row("forward speed-up, now (fp32) over legacy", seconds["legacy"] / seconds["fp32"], "x", dataset=name)
    if not native:
        print("bf16 network rows skipped: this CPU has no native bfloat16, so sauron_predict/train refuse bf16 here")


if __name__ == "__main__":
    sys.exit(main())
