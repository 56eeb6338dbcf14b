"""The conv block's convolution and instance norm, routed to the fastest exact CPU kernels.

Two measured facts (torch 2.13, 2 threads, ``benchmarks/cpu_limit.py``; the profile is in the README's
"Speed on the CPU"):

- PyTorch sends a float32 3D convolution with batch 1, kernel ≤ 3 and ``N·C·D·H ≤ 20480`` to its native
  ``slow_conv3d`` (im2col + GEMM) instead of oneDNN ("for some case, native is faster", aten's
  ``ConvParams::use_mkldnn``). That is every sliding-window tile of a ``cpu``-preset or Sauron-pruned network,
  whose layers are narrow: a ``cpu``-preset forward took 117 ms on the native path and 27 ms through oneDNN
  (same batch, same numbers to 2e-5). :func:`conv` calls oneDNN directly wherever it can run the op at full
  speed (float32, or bfloat16 on a CPU with native bf16); it is differentiable.
- ``F.instance_norm`` reshapes to a batch norm over ``(1, B·C, ...)``; ``F.group_norm`` with one group per
  channel computes the same normalisation with a direct kernel, 10–40 % faster forward and backward on
  contiguous tensors, with the same float32 error against float64 (~1e-6). On channels-last tensors the CPU
  group-norm kernel sums x and x² (errors of 5e-4 seen on maps with mean 5), so there the instance norm stays.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import register_flop_formula



@lru_cache(maxsize=1)
def _onednn_bf16() -> bool:
    """oneDNN's own condition for its bf16 convolution (AVX512-BW/VL/DQ or AVX-NE-CONVERT)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@register_flop_formula(torch.ops.aten.mkldnn_convolution)
def _mkldnn_convolution_flop(x_shape, w_shape, bias, padding, stride, dilation, groups, *args, out_shape=None,
                             **kwargs) -> int:
    """FlopCounterMode counts the direct oneDNN call like the convolution it replaces: 2 FLOPs per
    multiply-accumulate, (c_in / groups) · kernel volume of them per output element."""
    return 2 * math.prod(out_shape) * math.prod(w_shape[1:])


def _tracing() -> bool:
    """Exporters and compilers see the plain modules (ONNX has no oneDNN op; InstanceNormalization is an ONNX op)."""
    return (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or torch.onnx.is_in_onnx_export())


def _onednn_ok(x: torch.Tensor, module: nn.Module) -> bool:
    if x.device.type != "cpu" or module.groups != 1 or not torch.backends.mkldnn.is_available() or _tracing():
        return False
    if x.dtype == torch.float32:
        return module.weight.dtype == torch.float32
    return x.dtype == torch.bfloat16 and _onednn_bf16()


def conv(module: nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, through oneDNN on the CPU whatever the batch size (see the module docstring).

    Under CPU autocast the weights are cast as autocast would (the direct call bypasses its dispatch).
    """
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        x = x.to(dtype)
        weight, bias = module.weight.to(dtype), None if module.bias is None else module.bias.to(dtype)
    else:
        weight, bias = module.weight, module.bias
    if not _onednn_ok(x, module) or module.padding_mode != "zeros" or isinstance(module.padding, str):
        return module(x)
    return torch.ops.aten.mkldnn_convolution(x, weight, bias, list(module.padding), list(module.stride),
                                             list(module.dilation), module.groups)


def instance_norm(x: torch.Tensor, norm: nn.InstanceNorm2d | nn.InstanceNorm3d) -> torch.Tensor:
    """``norm(x)`` (affine, no running statistics), as a group norm with one group per channel where exact."""
    if norm.track_running_stats or not x.is_contiguous() or _tracing():
        return norm(x)
    return F.group_norm(x, x.shape[1], norm.weight, norm.bias, norm.eps)
