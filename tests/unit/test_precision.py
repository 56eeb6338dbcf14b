import pytest
import torch

from sauronnet import precision
from sauronnet.precision import autocast, memory_format, resolve_precision


@pytest.fixture
def native(monkeypatch):
    def set_native(value: bool):
        monkeypatch.setattr(precision, "native_bf16", lambda: value)
    return set_native


def test_auto_picks_bf16_only_where_the_cpu_has_it(native):
    native(True)
    assert resolve_precision("auto", "cpu") == "bf16"
    native(False)
    assert resolve_precision("auto", "cpu") == "fp32"


def test_bf16_without_native_support_is_refused_with_the_fix(native):
    native(False)
    with pytest.raises(ValueError, match="no native bfloat16.*--precision fp32"):
        resolve_precision("bf16", "cpu")
    native(True)
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_cuda_keeps_its_amp_for_training():
    assert resolve_precision("auto", "cuda", training=True) == "amp"
    assert resolve_precision("auto", "cuda") == "fp32"
    assert resolve_precision("bf16", "cuda") == "bf16"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp16.*fp32, bf16, auto"):
        resolve_precision("fp16", "cpu")


def test_layout_and_autocast_follow_the_precision():
    cpu = torch.device("cpu")
    assert memory_format(cpu, "bf16", 3) == torch.channels_last_3d
    assert memory_format(cpu, "bf16", 2) == torch.channels_last
    assert memory_format(cpu, "fp32", 3) == torch.contiguous_format
    lin = torch.nn.Linear(4, 4)
    with autocast(cpu, "bf16"):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
