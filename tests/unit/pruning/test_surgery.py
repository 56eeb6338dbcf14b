"""Surgery equivalence in float64: pruning == zeroing the pruned channels' maps in an unpruned copy."""
import copy

import pytest
import torch

from sauronnet.losses import DeepSupervisionLoss
from sauronnet.networks.unet import ConvBlock, UNet, build_network
from sauronnet.plans import NetworkPlan
from sauronnet.pruning.optim_state import slice_optimizer_state
from sauronnet.pruning.surgery import remove_channels

PLAN = NetworkPlan((4, 6, 8), ((1, 3, 3), (3, 3, 3), (3, 3, 3)), ((1, 1, 1), (1, 2, 2), (2, 2, 2)), (2, 2, 2),
                   (2, 2))


def trained_looking(seed=0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(PLAN, 1, 3).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
    return net


def choose(net: UNet, seed=1) -> dict[str, torch.Tensor]:
    """A random non-empty set of channels to remove in every prunable layer (never all of them)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in net.widths().items():
        n = int(torch.randint(1, w, (1,), generator=g))
        out[name] = torch.randperm(w, generator=g)[:n].sort().values
    return out


def mask_hooks(net: UNet, removed: dict[str, torch.Tensor]):
    def make(idx):
        def hook(module, inputs, output):
            output = output.clone()
            output[:, idx] = 0
            return output
        return hook
    return [net.layer(n).register_forward_hook(make(idx)) for n, idx in removed.items()]


def prune_all(net: UNet, removed: dict[str, torch.Tensor], optimizer=None) -> None:
    for name, idx in removed.items():
        group = next(g for g in net.prunable_groups() if g.name == name)
        keep = torch.tensor([c for c in range(group.width) if c not in set(idx.tolist())])
        slices = remove_channels(net, group, keep)
        if optimizer is not None:
            slice_optimizer_state(optimizer, slices)


def test_pruned_network_equals_masked_network():
    ref = trained_looking()
    pruned = copy.deepcopy(ref)
    removed = choose(ref)
    mask_hooks(ref, removed)
    params_before = {id(p) for p in pruned.parameters()}
    prune_all(pruned, removed)
    assert {id(p) for p in pruned.parameters()} == params_before  # Parameter objects kept
    assert pruned.widths() == {n: w - len(removed[n]) for n, w in ref.widths().items()}
    x = torch.randn(2, 1, 8, 16, 16, dtype=torch.float64)
    for a, b in zip(ref(x), pruned(x)):
        assert (a - b).abs().max() < 1e-10


def test_pruned_network_rebuilds_from_its_widths():
    net = trained_looking()
    prune_all(net, choose(net, seed=4))
    copy_ = build_network(PLAN, 1, 3, net.widths()).double()
    copy_.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 8, 16, 16, dtype=torch.float64)
    for a, b in zip(net(x), copy_(x)):
        assert torch.equal(a, b)


def test_pruning_to_one_channel_still_runs():
    net = trained_looking()
    prune_all(net, {n: torch.arange(1, w) for n, w in net.widths().items()})
    assert set(net.widths().values()) == {1}
    outs = net(torch.randn(1, 1, 8, 16, 16, dtype=torch.float64))
    assert all(torch.isfinite(o).all() for o in outs)


def test_cannot_remove_every_channel():
    net = trained_looking()
    group = net.prunable_groups()[0]
    with pytest.raises(ValueError, match="every channel"):
        remove_channels(net, group, torch.tensor([], dtype=torch.long))


def _kept(ref: UNet, pruned: UNet, removed: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs (reference parameter restricted to kept channels, pruned parameter)."""
    keep = {n: torch.tensor([c for c in range(w) if c not in set(removed[n].tolist())])
            for n, w in ref.widths().items()}
    pairs = []
    groups = {g.name: g for g in ref.prunable_groups()}
    in_index = {}  # consumer module -> kept input channel index
    for name, g in groups.items():
        for c in g.consumers:
            in_index.setdefault(c.module, []).append((c.offset, g.width, keep[name]))
    for name in list(ref.widths()) + [f"head{d}" for d in range(len(ref.heads))]:
        m_ref, m_pr = ref.layer(name), pruned.layer(name)
        conv_ref = m_ref.conv if isinstance(m_ref, ConvBlock) else m_ref
        conv_pr = m_pr.conv if isinstance(m_pr, ConvBlock) else m_pr
        transposed = isinstance(conv_ref, torch.nn.ConvTranspose3d)
        out_dim, in_dim = (1, 0) if transposed else (0, 1)
        w = conv_ref.weight
        if name in keep:
            w = w.index_select(out_dim, keep[name])
        if name in in_index:
            idx = torch.cat([off + k for off, _, k in sorted(in_index[name], key=lambda t: t[0])])
            w = w.index_select(in_dim, idx)
        pairs.append((w, conv_pr.weight))
        b = conv_ref.bias if name not in keep else conv_ref.bias.index_select(0, keep[name])
        pairs.append((b, conv_pr.bias))
        if isinstance(m_ref, ConvBlock):
            pairs.append((m_ref.norm.weight.index_select(0, keep[name]), m_pr.norm.weight))
            pairs.append((m_ref.norm.bias.index_select(0, keep[name]), m_pr.norm.bias))
    return pairs


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5),
    lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=3e-5),
], ids=["sgd_nesterov", "adam"])
def test_optimizer_continuity_after_pruning(make_opt):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 1, 8, 16, 16)).double()
    loss_fn = DeepSupervisionLoss(2, batch_dice=False)
    ref = trained_looking()
    opt_ref = make_opt(ref.parameters())
    for _ in range(3):  # build up optimizer state before pruning
        opt_ref.zero_grad()
        loss_fn(ref(x), y).backward()
        opt_ref.step()
    pruned = copy.deepcopy(ref)
    opt_pr = make_opt(pruned.parameters())
    # deep copy: load_state_dict keeps the very same buffer tensors, which both optimizers would then update
    opt_pr.load_state_dict(copy.deepcopy(opt_ref.state_dict()))
    removed = choose(ref, seed=2)
    mask_hooks(ref, removed)
    prune_all(pruned, removed, opt_pr)
    for _ in range(4):
        for net, opt in ((ref, opt_ref), (pruned, opt_pr)):
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
    for a, b in _kept(ref, pruned, removed):
        assert a.shape == b.shape
        assert (a - b).abs().max() < 1e-10


def _copy_channel(net: UNet, name: str, src: int, dst: int) -> None:
    from sauronnet.pruning.surgery import filter_parameters
    with torch.no_grad():
        for p, dim in filter_parameters(net, name):
            p.index_copy_(dim, torch.tensor([dst]), p.index_select(dim, torch.tensor([src])))


@pytest.mark.parametrize("name", ["enc0.1", "enc1.0", "up0", "dec1.1"])
def test_merging_equal_channels_keeps_outputs(name):
    from sauronnet.pruning.surgery import merge_channels
    net = trained_looking()
    width = net.widths()[name]
    _copy_channel(net, name, 0, width - 1)  # channels 0 and width-1 now make the same map
    _copy_channel(net, name, 1, 2)
    clusters = [torch.tensor([0, width - 1]), torch.tensor([1, 2])] + [torch.tensor([c]) for c in range(3, width - 1)]
    x = torch.randn(1, 1, 8, 16, 16, dtype=torch.float64)
    net.eval()
    net.deep_supervision = False
    with torch.no_grad():
        before = net(x)
        group = next(g for g in net.prunable_groups() if g.name == name)
        merge_channels(net, group, clusters)
        after = net(x)
    assert net.widths()[name] == width - 2
    assert torch.allclose(before, after, atol=1e-10)


def test_zeroed_channels_are_removed_without_changing_outputs():
    from sauronnet.pruning.surgery import zero_channels
    net = trained_looking()
    x = torch.randn(1, 1, 8, 16, 16, dtype=torch.float64)
    net.eval()
    net.deep_supervision = False
    removed = choose(net)
    for name, idx in removed.items():
        zero_channels(net, name, idx)
    with torch.no_grad():
        soft = net(x)
        prune_all(net, removed)
        assert torch.allclose(soft, net(x), atol=1e-10)
