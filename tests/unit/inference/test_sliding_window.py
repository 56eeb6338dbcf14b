import itertools

import numpy as np
import pytest

from sauronnet.inference.sliding_window import (MAX_TILES_PER_CALL, gaussian_importance, sliding_window,
                                                sliding_window_slices, tile_starts, tiles_per_call)


@pytest.mark.parametrize("image, tile, step, expected", [
    # nnunetv2.inference.sliding_window_prediction.compute_steps_for_sliding_window, nnU-Net v2.8.1
    ((64, 80, 64), (64, 80, 64), 0.5, [[0], [0], [0]]),
    ((100, 200, 37), (64, 80, 32), 0.5, [[0, 18, 36], [0, 40, 80, 120], [0, 5]]),
    ((130,), (64,), 0.5, [[0, 22, 44, 66]]),
    ((65, 129), (64, 64), 0.5, [[0, 1], [0, 22, 43, 65]]),
    ((300,), (64,), 0.25, [[0, 16, 31, 47, 63, 79, 94, 110, 126, 142, 157, 173, 189, 205, 220, 236]]),
    ((97,), (64,), 1.0, [[0, 33]]),
])
def test_tile_starts_match_nnunet(image, tile, step, expected):
    assert tile_starts(image, tile, step) == expected


def test_gaussian_properties():
    g = gaussian_importance((8, 12, 10))
    assert g.dtype == np.float32 and g.shape == (8, 12, 10)
    assert g.max() == pytest.approx(10.0) and g[4, 6, 5] == pytest.approx(10.0)
    assert (g > 0).all()
    assert g[0, 0, 0] < g[2, 3, 3] < g[4, 6, 5]  # decreasing away from the centre


def position_net(x: np.ndarray) -> np.ndarray:
    """Outputs a fixed function of absolute position: needs the tile's offset, which it reads from channel 1."""
    pos = x[:, 1:2]  # the input carries a position code; the "prediction" is a smooth function of it
    return np.concatenate([np.sin(pos), np.cos(pos), pos * 0.1], axis=1)


@pytest.mark.parametrize("mirror", [(), (0, 1, 2)])
def test_stitching_has_no_seams(mirror):
    shape = (20, 33, 27)
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    code = 0.1 * z + 0.05 * y - 0.03 * x
    volume = np.stack([np.zeros(shape, np.float32), code])
    out = sliding_window(position_net, volume, (8, 16, 16), step=0.5, mirror_axes=mirror)
    expected = position_net(volume[None])[0]
    assert out.shape == (3, *shape) and out.dtype == np.float32
    assert np.abs(out - expected).max() < 1e-5


def test_small_images_are_padded_and_cropped_back():
    volume = np.random.RandomState(0).randn(1, 5, 7, 9).astype(np.float32)
    out = sliding_window(lambda t: np.repeat(t, 2, axis=1), volume, (8, 8, 8), step=0.5)
    assert out.shape == (2, 5, 7, 9)
    assert np.allclose(out[0], volume[0], atol=1e-6)


def test_2d():
    volume = np.random.RandomState(1).randn(1, 30, 41).astype(np.float32)
    out = sliding_window(lambda t: t * 2, volume, (16, 16), step=0.5, mirror_axes=(0, 1), batch_size=3)
    assert np.allclose(out[0], volume[0] * 2, atol=1e-5)


def test_invalid_step():
    with pytest.raises(ValueError, match="step"):
        tile_starts((10,), (4,), 0)


def reference_sliding_window(network, volume, patch, step, mirror_axes):
    """nnU-Net's order of work: pad, accumulate over the padded volume, divide, crop."""
    spatial = volume.shape[1:]
    pad = [max(p - s, 0) for s, p in zip(spatial, patch)]
    volume = np.pad(volume, [(0, 0)] + [(d // 2, d - d // 2) for d in pad])
    weights = gaussian_importance(tuple(patch))
    logits, norm = None, np.zeros(volume.shape[1:], np.float32)
    subsets = [c for r in range(len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, r)]
    for pos in itertools.product(*tile_starts(volume.shape[1:], patch, step)):
        sl = tuple(slice(s, s + p) for s, p in zip(pos, patch))
        x = volume[(None, slice(None)) + sl]
        pred = sum(np.flip(network(np.ascontiguousarray(np.flip(x, [a + 2 for a in ax]))), [a + 2 for a in ax])
                   for ax in subsets) / len(subsets)
        if logits is None:
            logits = np.zeros((pred.shape[1], *volume.shape[1:]), np.float32)
        logits[(slice(None),) + sl] += pred[0] * weights
        norm[sl] += weights
    crop = tuple(slice(d // 2, d // 2 + s) for d, s in zip(pad, spatial))
    return (logits / norm)[(slice(None),) + crop]


class ReusedBuffer:
    """A network that writes every output into the same array (as an inference runtime may)."""

    def __init__(self):
        self.out = None

    def __call__(self, x):
        if self.out is None or self.out.shape[0] != x.shape[0]:
            self.out = np.empty((x.shape[0], 2, *x.shape[2:]), np.float32)
        self.out[:, 0] = np.sin(3 * x[:, 0]) + x[:, 0] * np.roll(x[:, 0], 1, axis=-1)
        self.out[:, 1] = x[:, 0] ** 2
        return self.out


@pytest.mark.parametrize("shape, patch, mirror", [((1, 20, 33, 27), (8, 16, 16), ()),
                                                  ((1, 5, 40, 9), (8, 16, 16), (0, 2)),  # padded on two axes
                                                  ((1, 30, 12), (16, 16), (0, 1))])
def test_equals_nnunets_order_of_work_even_with_a_reused_output_buffer(shape, patch, mirror):
    volume = np.random.RandomState(2).randn(*shape).astype(np.float32)
    expected = reference_sliding_window(ReusedBuffer(), volume, patch, 0.5, mirror)
    got = sliding_window(ReusedBuffer(), volume, patch, step=0.5, mirror_axes=mirror)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_tile_starts_take_one_step_per_axis():
    assert tile_starts((5, 30), (1, 16), (1.0, 0.5)) == [[0, 1, 2, 3, 4], [0, 7, 14]]
    with pytest.raises(ValueError, match="2 steps for 3 axes"):
        tile_starts((5, 30, 30), (1, 16, 16), (1.0, 0.5))
    with pytest.raises(ValueError, match="step"):
        tile_starts((5, 30), (1, 16), (1.0, 0.0))


class ReusedBuffer2D(ReusedBuffer):
    """The 2D version: (B, 1, Y, X) → (B, 2, Y, X) in one reused array; no two slices give the same logits."""


@pytest.mark.parametrize("shape, patch, mirror", [((1, 7, 33, 27), (16, 16), ()),
                                                  ((1, 6, 12, 40), (16, 16), (0, 1)),  # padded in y
                                                  ((1, 3, 16, 16), (16, 16), (1,))])
@pytest.mark.parametrize("batch", [1, 5, 64])
def test_slices_share_network_calls_and_give_each_slices_own_window(shape, patch, mirror, batch):
    volume = np.random.RandomState(3).randn(*shape).astype(np.float32)
    expected = np.stack([sliding_window(ReusedBuffer2D(), volume[:, z], patch, 0.5, True, mirror)
                         for z in range(shape[1])], axis=1)
    calls = []

    def counted(x):
        calls.append(len(x))
        return net(x)

    net = ReusedBuffer2D()
    got = sliding_window_slices(counted, volume, patch, 0.5, True, mirror, batch)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    tiles = shape[1] * int(np.prod([len(t) for t in tile_starts([max(s, p) for s, p in zip(shape[2:], patch)],
                                                                 patch, 0.5)]))
    assert sum(calls) == tiles * 2 ** len(mirror)  # every tile of every slice once per mirror pass
    assert max(calls) == min(batch, tiles)


def test_tiles_per_call_fill_a_voxel_budget():
    assert tiles_per_call((80, 64)) == 25
    assert tiles_per_call((8, 8)) == MAX_TILES_PER_CALL
    assert tiles_per_call((512, 512)) == 1
    assert tiles_per_call((128, 128, 128)) == 1
    assert tiles_per_call((40, 40, 40)) == 2
    assert tiles_per_call((256, 256)) == 2


class Concurrent:
    """A reentrant network that only answers once ``parties`` calls are running at the same time (so it fails,
    by a timeout, unless the sliding window really runs calls side by side), recording which threads ran it and
    which ran its ``worker_init``."""

    def __init__(self, parties: int):
        import threading
        self.barrier = threading.Barrier(parties, timeout=10)
        self.threads, self.initialised = set(), set()
        self.lock = threading.Lock()

    def worker_init(self):
        import threading
        self.initialised.add(threading.get_ident())

    def __call__(self, x):
        import threading
        with self.lock:
            self.threads.add(threading.get_ident())
        self.barrier.wait()
        return np.concatenate([np.sin(3 * x) + x * np.roll(x, 1, axis=-1), x ** 2], axis=1)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("shape, patch, mirror, batch", [((1, 20, 33, 27), (8, 16, 16), (), 2),  # 48 tiles
                                                         ((1, 5, 56, 9), (8, 16, 16), (0, 2), 1)])  # padded, 6
def test_workers_run_calls_side_by_side_and_give_the_same_logits(workers, shape, patch, mirror, batch):
    import threading
    volume = np.random.RandomState(5).randn(*shape).astype(np.float32)
    expected = sliding_window(ReusedBuffer(), volume, patch, 0.5, True, mirror, batch)
    net = Concurrent(workers)
    n_calls = int(np.prod([len(t) for t in tile_starts([max(s, p) for s, p in zip(shape[1:], patch)], patch, 0.5)]))
    assert -(-n_calls // batch) % workers == 0  # the barrier needs every round of calls full
    got = sliding_window(net, volume, patch, 0.5, True, mirror, batch, workers=workers)
    np.testing.assert_array_equal(got, expected)  # the same calls, accumulated in the same order
    assert len(net.threads) == workers and threading.get_ident() not in net.threads
    assert net.initialised == net.threads  # worker_init ran first in every worker, never in the caller


def test_slices_pass_workers_and_worker_init_on():
    volume = np.random.RandomState(6).randn(1, 4, 16, 16).astype(np.float32)
    net = Concurrent(2)
    got = sliding_window_slices(net, volume, (16, 16), 0.5, True, (), batch_size=1, workers=2)
    expected = sliding_window_slices(ReusedBuffer2D(), volume, (16, 16), 0.5, True, (), batch_size=1)
    np.testing.assert_array_equal(got, expected)
    assert len(net.initialised) == 2


def test_workers_stay_a_few_calls_ahead_of_the_accumulation():
    from sauronnet.inference.sliding_window import Workers
    started = []
    results = Workers(3).map(lambda i: started.append(i) or i * i, list(range(50)))
    for consumed, (item, value) in enumerate(results, 1):
        assert value == item * item and item == consumed - 1  # in order
        if consumed == 10:
            import time
            time.sleep(0.2)  # a slow consumer: the workers must not run on through the whole list
            assert len(started) <= consumed + 3 + 1
    with pytest.raises(ValueError, match="workers"):
        sliding_window(lambda t: t, np.zeros((1, 8, 8), np.float32), (8, 8), workers=0)


def test_a_volume_of_few_calls_runs_them_in_the_calling_thread():
    import threading
    from sauronnet.inference.sliding_window import Workers
    seen = []
    pool = Workers(2)
    for n in (1, 2, 3):
        seen.clear()
        values = [v for _, v in pool.map(lambda i: seen.append(threading.get_ident()) or i, list(range(n)))]
        assert values == list(range(n))
        assert (set(seen) == {threading.get_ident()}) == (n <= 2)
