import math

import pytest
import torch

from sauronnet.pruning.distances import delta_opt, delta_prune, pool


def test_pool_keeps_singleton_axes():
    assert tuple(pool(torch.zeros(1, 2, 1, 6, 5)).shape) == (1, 2, 1, 3, 2)
    assert tuple(pool(torch.zeros(1, 2, 4, 4)).shape) == (1, 2, 2, 2)


def test_identical_channels_give_zero():
    x = torch.randn(2, 1, 4, 6, 6).repeat(1, 3, 1, 1, 1)
    assert float(delta_opt(x)) == pytest.approx(math.sqrt(1e-8))
    assert torch.allclose(delta_prune(x, reference=1), torch.zeros(3))


def test_delta_opt_by_hand_normalises_over_all_spatial_axes():
    ch0 = torch.arange(8.0).reshape(2, 2, 2)  # normalised: v / 7, mean 0.5
    ch1 = torch.zeros(2, 2, 2)
    ch1[1, 1, 1] = 7.0  # normalised: one 1, mean 1/8
    x = torch.stack([ch0, ch1])[None]
    assert float(delta_opt(x)) == pytest.approx(math.sqrt((0.5 - 0.125) ** 2 + 1e-8), rel=1e-6)


def test_per_slice_affine_copies_are_not_clustered():
    # the reference code normalised 3D maps per slice: a channel that is the reference up to a different
    # affine map per slice looked identical to it. Normalising over all axes keeps them apart.
    ref = torch.rand(1, 1, 2, 4, 4)
    other = ref.clone()
    other[:, :, 1] = other[:, :, 1] * 5 + 3
    assert float(delta_opt(torch.cat([ref, other], 1))) > 0.05


def test_constant_and_single_channels():
    x = torch.zeros(1, 2, 4, 4, 4)
    x[:, 0] = torch.rand(4, 4, 4)
    x[:, 1] = 3.0  # constant channel: range 0
    d = delta_opt(x)
    assert torch.isfinite(d)
    assert delta_opt(torch.rand(1, 1, 4, 4, 4)) is None
    assert torch.isfinite(delta_prune(torch.ones(2, 3, 4, 4), 0)).all()


def test_delta_prune_by_hand():
    x = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 3.0), torch.full((2, 2), 1.0)])[None]
    assert delta_prune(x, reference=0).tolist() == pytest.approx([0.0, 1.0, 0.0])
    # two samples: each normalised by its own max, then averaged
    y = torch.cat([x, torch.stack([torch.full((2, 2), 0.0), torch.full((2, 2), 1.0),
                                   torch.full((2, 2), 2.0)])[None]])
    assert delta_prune(y, reference=0).tolist() == pytest.approx([0.0, 0.75, 0.5])


def test_delta_opt_has_gradients_and_delta_prune_has_none():
    x = torch.rand(1, 3, 4, 4, 4, requires_grad=True)
    delta_opt(x).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not delta_prune(x, 0).requires_grad


def _affine_copy_layer(gamma: float, beta: float) -> torch.Tensor:
    """Block outputs (B, C, Z, Y, X) where channel 1 is channel 0 (the reference) times γ plus β, as an affine
    InstanceNorm with another γ, β makes of an identical filter; channels 2-3 are unrelated maps."""
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 1, 4, 8, 8, generator=g)
    others = torch.rand(2, 2, 4, 8, 8, generator=g) * 3
    return torch.cat([ref, gamma * ref + beta, others], 1)


@pytest.mark.parametrize("gamma, beta", [(2.0, 1.0), (0.5, 0.5), (1.5, -0.5)])
def test_scaled_and_shifted_copy_of_the_reference_scores_zero(gamma, beta):
    x = _affine_copy_layer(gamma, beta)
    for maps in ("zscore", "minmax"):
        score = delta_prune(x, reference=0, maps=maps)
        assert float(score[1]) < 1e-4, (maps, score)
        assert float(score[2:].min()) > 0.3  # the unrelated channels stay far from the reference
    # raw maps (our affine norms) see the copy as far away: the fault the normalised rules fix
    assert float(delta_prune(x, reference=0, maps="raw")[1]) > 0.09


def test_raw_maps_let_one_scaled_copy_hide_everything():
    x = _affine_copy_layer(2.0, 1.0)
    assert float(delta_prune(x, reference=0, maps="raw")[1]) == pytest.approx(1.0)


def test_unknown_score_maps_are_refused():
    with pytest.raises(ValueError, match="zscore"):
        delta_prune(torch.rand(1, 2, 4, 4), 0, maps="l1")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_constant_channel_stays_finite(dtype):
    # a fully padded patch gives a constant channel; in fp16 the 1e-8 range epsilon underflows to 0 (0/0 = NaN)
    x = torch.zeros(1, 3, 4, 4, 4)
    x[:, 0] = torch.rand(4, 4, 4)
    x[:, 2] = torch.rand(4, 4, 4)
    x = x.to(dtype).requires_grad_()
    d = delta_opt(x)
    assert d.dtype == torch.float32 and torch.isfinite(d)
    d.backward()
    if dtype == torch.bfloat16:  # fp16 cannot hold the 1/eps-sized gradient of a constant map (AMP skips the step)
        assert torch.isfinite(x.grad.float()).all()
    for maps in ("raw", "zscore", "minmax"):
        assert torch.isfinite(delta_prune(x, 0, maps=maps)).all()


def test_distances_under_cpu_autocast_are_float32_and_finite():
    conv = torch.nn.Conv3d(1, 4, 3, padding=1)
    x = torch.zeros(1, 1, 4, 8, 8)  # an all-padding patch: every channel is constant
    with torch.autocast("cpu", dtype=torch.float16):
        out = conv(x)
        d = delta_opt(out)
    assert out.dtype == torch.float16
    assert d.dtype == torch.float32 and torch.isfinite(d)


def _definition(x: torch.Tensor) -> torch.Tensor:
    """δ_opt as DESIGN.md §5 states it: min-max normalise every full-resolution map, pool, distances to channel 0
    (the extremes through ``min``/``max`` over the flattened map: at tied extremes the gradient goes to the one
    position they pick, a subgradient)."""
    from sauronnet.pruning.distances import OPT_EPS, RANGE_EPS

    flat = x.flatten(2)
    shape = (*x.shape[:2], *([1] * (x.ndim - 2)))
    lo = flat.min(dim=2).values.reshape(shape)
    normed = pool((x - lo) / (flat.max(dim=2).values.reshape(shape) - lo + RANGE_EPS))
    spatial = tuple(range(2, x.ndim))
    return torch.sqrt((normed[:, :1] - normed[:, 1:]).pow(2).mean(dim=spatial) + OPT_EPS).mean()


@pytest.mark.parametrize("shape", [(2, 5, 6, 8, 4), (1, 4, 1, 6, 5), (3, 3, 8, 6), (2, 3, 7, 5, 9)])
def test_delta_opt_equals_its_definition_value_and_gradient(shape):
    # delta_opt pools first (the normalisation is affine per map) and has its own backward: neither may change
    # the value or the gradient (odd sizes: pooling drops the remainder, which gets only the extremes' share)
    x = (torch.randn(*shape, dtype=torch.float64) * 3 + 1)
    x[0, 1].fill_(2.0)  # a constant map (range 0) and tied extremes
    x[-1, 2].view(-1)[:3] = x[-1, 2].max()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = _definition(a)
    got = delta_opt(b)
    expected.backward()
    got.backward()
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("shape, layout", [((2, 6, 6, 10, 8), torch.channels_last_3d),
                                           ((2, 6, 10, 8), torch.channels_last)])
def test_delta_opt_of_bfloat16_channels_last_maps_matches_float64(shape, layout):
    # the training step's block outputs: bf16 under autocast, channels-last; the gradient keeps both, and the
    # value and gradient are those of the same maps in float64 (to bf16's rounding of the gradient)
    x = torch.randn(*shape).to(torch.bfloat16).contiguous(memory_format=layout)
    x.requires_grad_()
    ref = x.detach().double().requires_grad_()
    got, expected = delta_opt(x), _definition(ref)
    got.backward()
    expected.backward()
    assert got.dtype == torch.float32
    assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert x.grad.dtype == torch.bfloat16 and x.grad.is_contiguous(memory_format=layout)
    torch.testing.assert_close(x.grad.double(), ref.grad, rtol=1e-2, atol=1e-2 * float(ref.grad.abs().max()))


@pytest.mark.parametrize("shape", [(2, 3, 6, 8, 4), (1, 2, 1, 7, 5), (2, 3, 9, 6), (1, 2, 5, 1, 1)])
@pytest.mark.parametrize("size", [2, 3])
def test_pool_equals_avg_pool_in_float32_for_every_layout(shape, size):
    x = torch.randn(*shape)
    kernel = [size if s > 1 else 1 for s in shape[2:]]
    avg = (torch.nn.functional.avg_pool3d if x.ndim == 5 else torch.nn.functional.avg_pool2d)(x, kernel, kernel)
    torch.testing.assert_close(pool(x, size), avg)
    if x.ndim == 5:
        torch.testing.assert_close(pool(x.contiguous(memory_format=torch.channels_last_3d), size), avg)
    half = pool(x.to(torch.bfloat16), size)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, avg, rtol=1e-2, atol=1e-2)
    assert pool(x.double(), size).dtype == torch.float64
