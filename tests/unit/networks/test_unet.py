import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sauronnet.networks.estimates import forward_flops
from sauronnet.networks.unet import UNet, default_widths
from sauronnet.plans import NetworkPlan

PLAN_3D = NetworkPlan((4, 8, 16), ((1, 3, 3), (3, 3, 3), (3, 3, 3)), ((1, 1, 1), (1, 2, 2), (2, 2, 2)),
                      (2, 2, 2), (2, 2))
PLAN_2D = NetworkPlan((4, 8, 16, 32), ((3, 3),) * 4, ((1, 1), (2, 2), (2, 2), (2, 2)), (2, 2, 2, 2), (2, 2, 2))


def test_3d_output_shapes_with_deep_supervision():
    net = UNet(PLAN_3D, 2, 3)
    outs = net(torch.zeros(2, 2, 8, 16, 16))
    assert list(tuple(o.shape) for o in outs) == [(2, 3, 8, 16, 16), (2, 3, 8, 8, 8)]


def test_2d_output_shapes_and_no_deep_supervision():
    net = UNet(PLAN_2D, 1, 4, deep_supervision=False)
    assert tuple(net(torch.zeros(3, 1, 32, 24)).shape) == (3, 4, 32, 24)
    net.deep_supervision = True
    assert len(net(torch.zeros(1, 1, 32, 24))) == 3


def test_width_map_is_honoured():
    widths = {"enc0.0": 3, "enc1.1": 5, "up0": 2, "dec1.1": 1}
    net = UNet(PLAN_3D, 1, 3, widths)
    assert net.widths() == {**default_widths(PLAN_3D), **widths}
    outs = net(torch.zeros(1, 1, 8, 16, 16))
    assert tuple(outs[0].shape) == (1, 3, 8, 16, 16)
    assert net.layer("dec0.0").conv.in_channels == 2 + 5  # upsampled (up0) then skip (enc1.1)


def test_unknown_width_rejected():
    with pytest.raises(ValueError, match="enc9.0"):
        UNet(PLAN_3D, 1, 3, {"enc9.0": 2})


def test_prunable_groups_offsets_follow_concatenation():
    net = UNet(PLAN_3D, 1, 3, {"up0": 6, "up1": 3})
    groups = {g.name: g for g in net.prunable_groups()}
    assert set(groups) == set(default_widths(PLAN_3D))
    cons = {c.module: c.offset for c in groups["enc1.1"].consumers}
    assert cons == {"enc2.0": 0, "dec0.0": 6}
    assert {c.module: c.offset for c in groups["enc0.1"].consumers} == {"enc1.0": 0, "dec1.0": 3}
    assert list(c.module for c in groups["enc2.1"].consumers) == ["up0"]
    assert list(c.module for c in groups["dec0.1"].consumers) == ["head0", "up1"]
    assert list(c.module for c in groups["dec1.1"].consumers) == ["head1"]
    # every consumer offset + producer width fits in the consumer's input channels
    for g in groups.values():
        for c in g.consumers:
            m = net.layer(c.module)
            c_in = m.conv.in_channels if hasattr(m, "conv") else m.in_channels
            assert c.offset + g.width <= c_in


@pytest.mark.parametrize("plan, shape", [(PLAN_3D, (8, 16, 16)), (PLAN_2D, (32, 24))])
def test_flop_estimate_equals_flop_counter(plan, shape):
    widths = {"enc0.1": 3, "up0": 5}
    net = UNet(plan, 1, 3, widths)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(2, 1, *shape))
    order = list(default_widths(plan))
    w = {**default_widths(plan), **widths}
    assert forward_flops(plan, shape, 1, 3, batch_size=2, widths=[w[k] for k in order]) == counter.get_total_flops()
