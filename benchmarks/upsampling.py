"""The decoder's upsampling (transposed convolutions, kernel = stride) through PyTorch's CPU kernel against one GEMM
and one interleaving copy (:func:`gemm_upsampling`, which computes the same numbers; tried 2026-12-07 and not
adopted: no consistent gain, README "Speed on the CPU").

Usage::

    .venv/bin/python benchmarks/upsampling.py [--threads 2] [--repeats 7] [--keep 1 0.35] [--json FILE]

For toy64's ``nnunet`` and ``cpu`` plans, 3D and 2D, at the planned widths and at every width scaled by each
``--keep`` fraction (untrained networks: the time of a layer does not depend on its weights), in fp32:

- the upsampling layers alone (their inputs as the network feeds them), summed;
- the whole network's inference forward (deep supervision off) on one call's batch of tiles
  (``tiles_per_call``, as ``sauron_predict`` batches them);
- one training forward + backward (deep supervision on, every output's sum as the loss) on the plan's batch,
  at most 8 patches (the compression benchmark's 2D runs train with 8).

"torch" is ``nn.ConvTranspose{2,3}d``'s own forward, "gemm" :func:`gemm_upsampling`; the two are interleaved,
medians of ``--repeats`` calls after a warm-up. The largest difference between the two outputs is printed too.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_model, write_rows  # noqa: E402
from benchmarks.cpu_limit import toy64_plans  # noqa: E402


def gemm_upsampling(module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for a transposed conv whose kernel equals its stride: every input voxel owns one output block,
    so ``(C_out·k, C_in) @ (C_in, voxels)`` gives all blocks and one copy interleaves them. Differentiable."""
    n, (b, c_in), spatial = x.dim() - 2, x.shape[:2], x.shape[2:]
    kernel, c_out = tuple(module.weight.shape[2:]), module.weight.shape[1]
    y = (module.weight.reshape(c_in, -1).t() @ x.reshape(b, c_in, -1)).view(b, c_out, *kernel, *spatial)
    y = y.permute(0, 1, *[axis for i in range(n) for axis in (2 + n + i, 2 + i)])
    y = y.reshape(b, c_out, *(size * k for size, k in zip(spatial, kernel)))
    return y + module.bias.view(1, c_out, *([1] * n))


@contextmanager
def gemm(net):
    """The network's transposed convs run :func:`gemm_upsampling` inside the block."""
    if any(tuple(m.kernel_size) != tuple(m.stride) or any(m.padding) for m in net.ups):
        raise ValueError("the network's upsampling is not kernel = stride")
    for m in net.ups:
        m.forward = lambda x, m=m: gemm_upsampling(m, x)
    try:
        yield
    finally:
        for m in net.ups:
            del m.forward


def interleaved(net, fn, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn()`` with PyTorch's upsampling and with :func:`gemm_upsampling`."""
    before, now = [], []
    for i in range(repeats + 1):
        for times, use_gemm in ((before, False), (now, True)):
            with gemm(net) if use_gemm else nullcontext():
                t0 = time.perf_counter()
                fn()
                if i:  # the first round warms up
                    times.append(time.perf_counter() - t0)
    return statistics.median(before), statistics.median(now)


def upsampling_inputs(net, x) -> list[torch.Tensor]:
    """Each transposed conv's input for the network input ``x``."""
    captured = []
    hooks = [m.register_forward_hook(lambda m, i, o: captured.append(i[0])) for m in net.ups]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return captured


def main(argv=None) -> int:
    from sauronnet.inference.sliding_window import tiles_per_call
    from sauronnet.networks.unet import build_network, default_widths
    from sauronnet.pruning.targets import uniform_widths

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", type=float, nargs="+", default=[1.0, 0.35],
                        help="width fractions (1: the plan's widths; 0.35 leaves ~12 %% of the FLOPs)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# {cpu_model()}, {args.threads} threads, torch {torch.__version__}")
    rows = []
    header = "| plan | keep | what | batch | torch (ms) | gemm (ms) | gemm speed-up | largest difference |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for preset, plans in toy64_plans().items():
        for config in ("3d_fullres", "2d"):
            cfg = plans.configuration(config)
            plan = cfg.network
            for keep in args.keep:
                widths = uniform_widths(default_widths(plan), 1 - keep)
                net = build_network(plan, 1, 3, widths, deep_supervision=False, seed=0)
                tiles = tiles_per_call(cfg.patch_size)
                x = torch.randn(tiles, 1, *cfg.patch_size)
                with torch.no_grad():
                    ref = net(x)
                    with gemm(net):
                        diff = (net(x) - ref).abs().max().item()
                inputs = upsampling_inputs(net, x)

                def ups_only():
                    with torch.no_grad():
                        for m, u in zip(net.ups, inputs):
                            m(u)

                def forward():
                    with torch.no_grad():
                        net(x)

                train_batch = min(cfg.batch_size, 8)
                xt = torch.randn(train_batch, 1, *cfg.patch_size)

                def step():
                    net.deep_supervision = True
                    try:
                        sum(o.sum() for o in net(xt)).backward()
                    finally:
                        net.deep_supervision = False
                    net.zero_grad(set_to_none=True)

                for what, fn, batch in (("upsampling layers", ups_only, tiles), ("inference forward", forward, tiles),
                                        ("training forward + backward", step, train_batch)):
                    before, now = interleaved(net, fn, args.repeats)
                    row = dict(plan=f"{preset} {config}", keep=keep, what=what, batch=batch,
                               torch_ms=before * 1e3, gemm_ms=now * 1e3, speedup=before / now,
                               max_abs_diff=diff if what == "inference forward" else None)
                    rows.append(row)
                    print(f"| {row['plan']} | {keep:g} | {what} | {batch} | {before * 1e3:.1f} | {now * 1e3:.1f} | "
                          f"{before / now:.2f}× | {'' if row['max_abs_diff'] is None else f'{diff:.1e}'} |",
                          flush=True)
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
