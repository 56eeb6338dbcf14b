"""The conv block's kernels: the same numbers as the modules they replace, through oneDNN at batch 1."""
import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from sauronnet.networks.cpu_kernels import conv, instance_norm


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dim", [2, 3])
def test_conv_takes_onednn_at_batch_one_with_the_modules_numbers(dim):
    torch.manual_seed(0)
    module = (nn.Conv3d if dim == 3 else nn.Conv2d)(4, 6, 3, padding=1)
    x = torch.randn(1, 4, *([7] * dim), requires_grad=True)
    with _Ops() as ops:
        out = conv(module, x)
    assert "aten.mkldnn_convolution" in ops.names
    x64 = x.detach().double().requires_grad_()
    ref = copy.deepcopy(module).double()(x64)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    out.square().sum().backward()
    ref.square().sum().backward()
    assert torch.allclose(x.grad.double(), x64.grad, rtol=1e-4, atol=1e-4)


def test_conv_falls_back_to_the_module_where_onednn_does_not_apply():
    module = nn.Conv3d(2, 3, 3, padding=1).double()
    x = torch.randn(1, 2, 5, 5, 5, dtype=torch.float64)
    with _Ops() as ops:
        out = conv(module, x)
    assert "aten.mkldnn_convolution" not in ops.names
    assert torch.equal(out, module(x))


def test_flop_counter_counts_the_direct_call_like_the_module():
    module = nn.Conv3d(4, 6, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    x = torch.randn(1, 4, 6, 10, 10)
    direct, plain = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with direct:
        conv(module, x)
    with plain:
        torch.nn.functional.conv3d(x, module.weight, module.bias, module.stride, module.padding)
    assert direct.get_total_flops() == plain.get_total_flops() > 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_norm_equals_the_module(channels_last):
    torch.manual_seed(1)
    norm = nn.InstanceNorm3d(5, eps=1e-5, affine=True).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.normal_()
    x = (torch.randn(2, 5, 6, 7, 8, dtype=torch.float64) * 3 + 5)
    if channels_last:
        x = x.to(memory_format=torch.channels_last_3d)
    assert torch.allclose(instance_norm(x, norm), norm(x), atol=1e-10)
