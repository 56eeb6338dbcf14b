from sauronnet.networks.estimates import forward_flops
from sauronnet.networks.complexity import measure
from sauronnet.networks.topology import IMAGE, consumers, layers, prunable
from sauronnet.networks.unet import build_network, default_widths
from sauronnet.plans import NetworkPlan

PLAN = NetworkPlan((4, 6, 8), ((3, 3, 3),) * 3, ((1, 1, 1), (2, 2, 2), (2, 2, 2)), (2, 1, 1), (1, 2))


def test_layers_in_forward_order_by_hand():
    names = [layer.name for layer in layers(PLAN)]
    assert names == ["enc0.0", "enc0.1", "enc1.0", "enc2.0", "up0", "dec0.0", "head0", "up1", "dec1.0", "dec1.1",
                     "head1"]
    by = {layer.name: layer for layer in layers(PLAN)}
    assert by["enc0.0"].inputs == (IMAGE,) and by["enc1.0"].stride == (2, 2, 2) and by["enc0.1"].stride == (1, 1, 1)
    assert by["dec0.0"].inputs == ("up0", "enc1.0") and by["dec1.0"].inputs == ("up1", "enc0.1")
    assert by["up1"].inputs == ("dec0.0",) and by["head1"].inputs == ("dec1.1",) and by["up0"].stage == 1
    assert list(default_widths(PLAN)) == [layer.name for layer in prunable(PLAN)]


def test_consumers_and_offsets_follow_the_current_widths():
    widths = {**default_widths(PLAN), "up0": 3, "up1": 2}
    c = consumers(PLAN, widths)
    assert c["enc1.0"] == [("enc2.0", 0), ("dec0.0", 3)]  # the skip sits after up0's 3 channels
    assert c["enc0.1"] == [("enc1.0", 0), ("dec1.0", 2)]
    assert c["dec0.0"] == [("head0", 0), ("up1", 0)]
    assert c["dec1.1"] == [("head1", 0)]


def test_estimated_flops_equal_the_counted_ones_for_any_widths():
    widths = {k: max(1, w - 2) for k, w in default_widths(PLAN).items()}
    net = build_network(PLAN, 2, 3, widths, deep_supervision=False)
    assert forward_flops(PLAN, (16, 16, 16), 2, 3, deep_supervision=False, widths=list(widths.values())) == \
        measure(net, (16, 16, 16)).flops


def test_a_seeded_build_leaves_the_global_random_state_alone():
    import torch
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_network(PLAN, 1, 3, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = build_network(PLAN, 1, 3, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_forward_seconds_times_each_network_and_restores_its_mode():
    from sauronnet.networks.complexity import forward_seconds
    nets = [build_network(PLAN, 2, 3), build_network(PLAN, 2, 3, {k: 1 for k in default_widths(PLAN)})]
    nets[1].eval()
    seconds = forward_seconds(nets, (16, 16, 16), batch=2, repeats=2)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    assert nets[0].training and not nets[1].training and all(n.deep_supervision for n in nets)
