"""Sliding-window inference as a pure function (nnU-Net's tiling, Gaussian weighting and mirror TTA).

- tiles: per axis ``ceil((size - patch) / (step · patch)) + 1`` positions spread evenly from 0 to
  ``size - patch`` (nnU-Net's ``compute_steps_for_sliding_window``);
- each tile's logits are weighted by a Gaussian (σ = patch/8, peak 10, zeros replaced by the smallest
  non-zero value) and accumulated in float32 together with the weights, then divided;
- mirror TTA averages the logits over every subset of ``mirror_axes`` (8 passes for 3 axes);
- an image smaller than the patch is padded with zeros for the network; only the tiles' voxels on the image are
  accumulated (the same numbers as accumulating on the padded volume and cropping, without holding it).
- tiles share network calls (``batch_size``; :func:`tiles_per_call` is the predictor's default), and a 2D network
  runs over all slices of a volume in shared calls (:func:`sliding_window_slices`); neither changes the logits
  beyond float rounding;
- ``workers`` (a count or a :class:`Workers` pool kept across volumes) runs that many network calls at once on
  threads, each with one intra-op thread (the network's ``worker_init``, if it has one, runs first in each
  thread), while the calling thread accumulates: a narrow (pruned) network's operators split poorly over threads
  inside one call (``Predictor``'s ``workers``). The logits are the same.

Arrays are numpy and the network is any callable on numpy batches, so the same tiling serves the torch and the
onnxruntime backends (and the deploy install has no torch).
"""
from __future__ import annotations

import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
from scipy.ndimage import gaussian_filter

GAUSSIAN_SIGMA_SCALE = 1 / 8
GAUSSIAN_PEAK = 10.0
#: tiles are batched into network calls of up to this many voxels: a small (pruned) network spends most of a
#: one-tile call on per-call and per-operator overhead. Measured (benchmarks/tile_batch.py, 2 threads): 2D toy64
#: 80 x 64 tiles, 25 per call against 1, made the unpruned nnU-Net-width network 1.4x and two pruned ones
#: 3.7-4.7x faster; 3D 40^3 tiles, 2 per call, 1.05-1.22x, but 4 per call slowed the unpruned one (0.96x) ...
TILE_BATCH_VOXELS = 2 ** 17
#: ... and at most this many tiles (tiny patches)
MAX_TILES_PER_CALL = 32


def tile_starts(image_size: Sequence[int], patch_size: Sequence[int], step: float | Sequence[float]
                ) -> list[list[int]]:
    """Start indices of the tiles along each axis (``image_size`` ≥ ``patch_size`` everywhere); ``step``: one
    fraction of the patch for every axis, or one per axis."""
    steps = _per_axis(step, len(patch_size))
    starts = []
    for n, p, step in zip(image_size, patch_size, steps):
        if n < p:
            raise ValueError(f"image size {tuple(image_size)} is smaller than the patch {tuple(patch_size)}")
        count = int(np.ceil((n - p) / (p * step))) + 1
        span = n - p
        starts.append([int(np.round(span / (count - 1) * i)) if count > 1 else 0 for i in range(count)])
    return starts


@lru_cache(maxsize=8)
def gaussian_importance(patch_size: tuple[int, ...]) -> np.ndarray:
    """float32 Gaussian weights of shape ``patch_size``, peak :data:`GAUSSIAN_PEAK`, no zeros."""
    tmp = np.zeros(patch_size)
    tmp[tuple(p // 2 for p in patch_size)] = 1
    g = gaussian_filter(tmp, [p * GAUSSIAN_SIGMA_SCALE for p in patch_size], 0, mode="constant", cval=0)
    g = g / g.max() * GAUSSIAN_PEAK
    g[g == 0] = g[g > 0].min()
    return g.astype(np.float32)


def _per_axis(step: float | Sequence[float], n: int) -> tuple[float, ...]:
    steps = tuple(float(x) for x in step) if isinstance(step, Sequence) else (float(step),) * n
    if len(steps) != n:
        raise ValueError(f"{len(steps)} steps for {n} axes")
    if not all(0 < x <= 1 for x in steps):
        raise ValueError(f"step must be in (0, 1], got {step}")
    return steps


def tiles_per_call(patch_size: Sequence[int]) -> int:
    """How many tiles one network call takes: as many as fit in :data:`TILE_BATCH_VOXELS`, at least one."""
    return int(np.clip(TILE_BATCH_VOXELS // int(np.prod(patch_size)), 1, MAX_TILES_PER_CALL))


def _mirror_subsets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


#: a network call: float32 (B, C, *patch) → float32 logits (B, K, *patch), numpy in and out. The backend (torch,
#: onnxruntime) lives entirely inside it, so this module and everything around it run without torch. With
#: ``workers`` > 1 it is called from several threads at once (torch modules in inference mode and onnxruntime
#: sessions allow that); it may reuse its output array only with one worker.
Network = Callable[[np.ndarray], np.ndarray]


def sliding_window(network: Network, volume: np.ndarray, patch_size: Sequence[int],
                   step: float | Sequence[float] = 0.5, gaussian: bool = True, mirror_axes: Sequence[int] = (),
                   batch_size: int = 1, workers: int | Workers = 1) -> np.ndarray:
    """Predicts logits for a whole volume.

    Args:
        network: maps float32 (B, C, *patch) to float32 logits (B, K, *patch) (deep supervision off).
        volume: float32 (C, *S); S is (Z, Y, X) or (Y, X).
        patch_size: the network's patch (spatial).
        step: tile step as a fraction of the patch (one for every axis, or one per axis).
        gaussian: weight tiles with a Gaussian (else uniformly).
        mirror_axes: spatial axes (0-based) to mirror for test-time augmentation.
        batch_size: tiles per network call.
        workers: network calls run at once, each on its own thread (1: every call in this thread); a
            :class:`Workers` pool is reused, a count gets a pool for this volume only.

    Returns:
        float32 logits (K, *S).
    """
    pool = workers if isinstance(workers, Workers) else Workers(workers, getattr(network, "worker_init", None))
    patch = tuple(int(p) for p in patch_size)
    spatial = tuple(volume.shape[1:])
    if len(spatial) != len(patch):
        raise ValueError(f"volume (C, *S) has spatial shape {spatial} but the patch is {patch}")
    pad = [max(p - s, 0) for s, p in zip(spatial, patch)]
    if any(pad):
        volume = np.pad(volume, [(0, 0)] + [(d // 2, d - d // 2) for d in pad])
    size = tuple(volume.shape[1:])
    image_start = [d // 2 for d in pad]  # where the image lies in the padded volume
    subsets = _mirror_subsets(tuple(mirror_axes))
    weights = gaussian_importance(patch) if gaussian else np.ones(patch, dtype=np.float32)
    # the mirrored passes' sum is averaged through its weights: 1 / 2^k is exact, so this equals dividing first
    pass_weights = weights / len(subsets)
    # accumulated on the image only (not the padding): padded images (patch larger than a CT's in-plane size)
    # would otherwise hold and divide up to (patch / size)^3 more logits
    logits = None
    norm = np.zeros(spatial, dtype=np.float32)
    positions = list(itertools.product(*tile_starts(size, patch, step)))

    def predict(chunk: list) -> np.ndarray:  # (B, K, *patch): the chunk's logits summed over the mirrored passes
        x = np.stack([volume[(slice(None),) + tuple(slice(s, s + p) for s, p in zip(pos, patch))]
                      for pos in chunk]).astype(np.float32, copy=False)
        pred = None
        for axes in subsets:
            dims = tuple(a + 2 for a in axes)
            out = np.asarray(network(np.ascontiguousarray(np.flip(x, dims)) if dims else x), dtype=np.float32)
            out = np.flip(out, dims) if dims else out
            if pred is not None:
                pred += out
            elif len(subsets) == 1 and out.flags.writeable and pool.count == 1:
                pred = out  # weighted in place below, before the network is called again
            else:
                pred = out.copy()
        return pred

    chunks = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    try:
        for chunk, pred in pool.map(predict, chunks):
            if logits is None:
                logits = np.zeros((pred.shape[1], *spatial), dtype=np.float32)
            for j, pos in enumerate(chunk):
                tile, image = _overlap(pos, patch, image_start, spatial)
                part = pred[j][(slice(None),) + tile]
                np.multiply(part, pass_weights[tile], out=part)
                logits[(slice(None),) + image] += part
                norm[image] += weights[tile]
    finally:
        if pool is not workers:
            pool.close()

    logits /= norm
    return logits


def sliding_window_slices(network: Network, volume: np.ndarray, patch_size: Sequence[int], step: float = 0.5,
                          gaussian: bool = True, mirror_axes: Sequence[int] = (), batch_size: int = 1,
                          workers: int | Workers = 1) -> np.ndarray:
    """A 2D network over every slice of a volume: the same logits as :func:`sliding_window` slice by slice, but the
    tiles of all slices share the network calls (``batch_size`` at a time), which a small network needs: a 2D slice
    has only a few tiles, and one 80 x 64 tile alone took a pruned network 7.5 ms, 3.9 ms in calls of 16 (1 thread).

    Args:
        network: maps float32 (B, C, Y, X) patches to logits (B, K, Y, X).
        volume: float32 (C, Z, Y, X).
        patch_size, step, mirror_axes: in-plane (2D), as for :func:`sliding_window`.

    Returns:
        float32 logits (K, Z, Y, X).
    """
    if volume.ndim != 4 or len(patch_size) != 2:
        raise ValueError(f"slices need a (C, Z, Y, X) volume and a 2D patch, got {volume.shape} and {patch_size}")

    def per_slice(x: np.ndarray) -> np.ndarray:  # (B, C, 1, Y, X) -> (B, K, 1, Y, X)
        return np.asarray(network(np.ascontiguousarray(x[:, :, 0])))[:, :, None]

    per_slice.worker_init = getattr(network, "worker_init", None)
    # one tile per slice along z (step 1), Gaussian weights constant along z (they cancel per slice)
    return sliding_window(per_slice, volume, (1, *patch_size), (1.0, step, step), gaussian,
                          tuple(a + 1 for a in mirror_axes), batch_size, workers)


T = TypeVar("T")
R = TypeVar("R")


class Workers:
    """Threads that run network calls side by side (``count`` 1: none, every call in the caller's thread).

    Kept across volumes by the predictor: a fresh thread's first call is slow (a demo case took 0.144 s with a new
    pool against 0.115 s with a kept one). ``init`` runs first in each thread (the network's ``worker_init``).
    """

    def __init__(self, count: int, init: Callable[[], None] | None = None):
        if count < 1:
            raise ValueError(f"workers must be at least 1, got {count}")
        self.count = count
        self.pool = ThreadPoolExecutor(count, initializer=init) if count > 1 else None

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R]]:
        """``(item, fn(item))`` in order, at most ``count + 1`` items ahead of the consumer, so results never pile
        up in memory. No more items than workers run in the caller's thread, every intra-op thread inside each
        call: one call (nnU-Net's 64 x 80 x 64 patch on a 64^3 image) took 1.6x as long on one worker thread, two
        demo-case calls on two workers 0.8-1.3x (benchmarks/tile_workers.py)."""
        if self.pool is None or len(items) <= self.count:
            yield from ((item, fn(item)) for item in items)
            return
        pending: deque = deque()
        try:
            for item in items:
                pending.append((item, self.pool.submit(fn, item)))
                if len(pending) > self.count:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:
            for _, future in pending:  # a failed call or an abandoned volume: the queued calls are not run
                future.cancel()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _overlap(start: Sequence[int], patch: Sequence[int], image_start: Sequence[int], image_size: Sequence[int]
             ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The part of a tile (at ``start`` in the padded volume) that lies on the image: (slices in the tile, slices in
    the image)."""
    tile, image = [], []
    for s, p, i0, n in zip(start, patch, image_start, image_size):
        lo, hi = max(s, i0), min(s + p, i0 + n)
        tile.append(slice(lo - s, hi - s))
        image.append(slice(lo - i0, hi - i0))
    return tuple(tile), tuple(image)
