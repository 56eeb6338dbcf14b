import pytest

from sauronnet.networks.complexity import measure
from sauronnet.networks.unet import build_network, default_widths
from sauronnet.plans import NetworkPlan
from sauronnet.pruning.targets import forward_flops, match_flops, uniform_widths

PLAN = NetworkPlan((8, 16, 32, 64), ((3, 3, 3),) * 4, ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)), (2, 2, 2, 2),
                   (2, 2, 2))
PATCH = (32, 32, 32)


def test_uniform_widths_round_and_keep_one():
    assert uniform_widths({"a": 10, "b": 3, "c": 1}, 0.5) == {"a": 5, "b": 2, "c": 1}
    with pytest.raises(ValueError):
        uniform_widths({"a": 4}, 1.0)


def test_forward_flops_on_meta_equals_a_real_count():
    widths = uniform_widths(default_widths(PLAN), 0.3)
    net = build_network(PLAN, 1, 3, widths, deep_supervision=False)
    assert forward_flops(PLAN, 1, 3, widths, PATCH) == measure(net, PATCH).flops


@pytest.mark.parametrize("keep", [0.05, 0.2, 0.5, 0.9])
def test_match_flops_within_five_percent(keep):
    full = forward_flops(PLAN, 1, 3, None, PATCH)
    widths, flops = match_flops(PLAN, 1, 3, PATCH, keep * full)
    assert flops == forward_flops(PLAN, 1, 3, widths, PATCH)
    assert flops == pytest.approx(keep * full, rel=0.05)
    planned = default_widths(PLAN)
    assert all(1 <= widths[k] <= planned[k] for k in planned)
