"""Patch sampling from memory-mapped preprocessed cases, and a reproducible background batch stream.

:class:`PatchSampler` follows nnU-Net's ``nnUNetDataLoader``: the last ⌈33 %⌉ of every batch is forced to
contain foreground (a random class with foreground, a random voxel of it, as patch centre); the others are
uniform over the padded image. 2D configurations sample a random slice of the 3D case.

:class:`BatchStream` makes sample ``j`` of batch ``i`` of epoch ``e`` a pure function of ``(seed, e, i, j)``: the
worker seeds numpy's and python's global generators (which batchgenerators uses) from those numbers before
sampling and augmenting that sample, and whether it is forced to contain foreground depends on ``j`` alone.
Batches are therefore identical whatever the number of workers, a resumed run regenerates exactly the batches an
uninterrupted run would have seen, and processes of a distributed run that each draw their positions ``j`` of
the global batch (:func:`sauronnet.distributed.batch_positions`) together draw the batch one process would.
"""
from __future__ import annotations

import multiprocessing
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from sauronnet.preprocessing.preprocess import CaseProperties, load_case

OVERSAMPLE_FOREGROUND = 0.33


@dataclass
class PatchSampler:
    """Samples ``(data, seg)`` patches of ``sample_size`` from the cases in ``folder`` for batches of
    ``batch_size`` (the global batch: it decides which positions are forced to contain foreground).

    :meth:`sample` returns a dict with ``data`` float32 (B, C, *sample_size), ``seg`` float32 (B, 1, *sample_size)
    (-1 where the patch leaves the image), ``keys`` the case ids; :meth:`sample_one` one patch of it.
    """

    folder: Path
    case_ids: Sequence[str]
    sample_size: tuple[int, ...]
    batch_size: int
    oversample_foreground: float = OVERSAMPLE_FOREGROUND

    def __post_init__(self) -> None:
        if not self.case_ids:
            raise ValueError(f"no cases to sample from in {self.folder}")
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, CaseProperties]] = {}

    def _case(self, case_id: str):
        if case_id not in self._cache:
            self._cache[case_id] = load_case(self.folder, case_id)
        return self._cache[case_id]

    def force_foreground(self, index: int) -> bool:
        """nnU-Net: sample ``index`` of a batch is forced to foreground iff it is in the last 33 %."""
        return not index < round(self.batch_size * (1 - self.oversample_foreground))

    def sample_one(self, rng: np.random.RandomState, position: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The patch at ``position`` of a batch: ``data`` float32 (C, *sample_size), ``seg`` (1, *sample_size),
        and its case id."""
        key = self.case_ids[rng.randint(len(self.case_ids))]
        data, seg, props = self._case(key)
        centre = self._foreground_voxel(props, rng) if self.force_foreground(position) else None
        if len(self.sample_size) == 2:
            z = centre[0] if centre is not None else rng.randint(data.shape[1])
            data, seg = data[:, z], seg[:, z]
            centre = centre[1:] if centre is not None else None
        d, s = crop_patch(data, seg, self._bbox(data.shape[1:], centre, rng), self.sample_size)
        return d, s, key

    def sample(self, rng: np.random.RandomState) -> dict:
        """A whole batch drawn from one generator."""
        patches = [self.sample_one(rng, b) for b in range(self.batch_size)]
        return {"data": np.stack([p[0] for p in patches]), "seg": np.stack([p[1] for p in patches]),
                "keys": [p[2] for p in patches]}

    @staticmethod
    def _foreground_voxel(props: CaseProperties, rng: np.random.RandomState) -> tuple[int, ...] | None:
        eligible = [k for k in sorted(props.class_locations) if props.class_locations[k]]
        if not eligible:
            return None
        locs = props.class_locations[eligible[rng.randint(len(eligible))]]
        return tuple(locs[rng.randint(len(locs))])

    def _bbox(self, shape: Sequence[int], centre: Sequence[int] | None, rng: np.random.RandomState) -> list[int]:
        """Lower corner of the patch (nnU-Net's ``get_bbox``; may lie outside the image, padding fills it)."""
        lower = []
        for i, (n, p) in enumerate(zip(shape, self.sample_size)):
            pad = max(p - n, 0)
            lb, ub = -(pad // 2), n + pad // 2 + pad % 2 - p
            if centre is None:
                lower.append(int(rng.randint(lb, ub + 1)))
            else:
                lower.append(int(max(lb, centre[i] - p // 2)))
        return lower


def crop_patch(data: np.ndarray, seg: np.ndarray, lower: Sequence[int], size: Sequence[int]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Crops ``data`` (C, *S) and ``seg`` (1, *S) to ``size`` at ``lower``; outside the image data is 0, seg -1."""
    src = tuple(slice(max(lo, 0), min(lo + sz, n)) for lo, sz, n in zip(lower, size, data.shape[1:]))
    dst = tuple(slice(s.start - lo, s.stop - lo) for s, lo in zip(src, lower))
    d = np.zeros((data.shape[0], *size), np.float32)
    s = np.full((seg.shape[0], *size), -1, np.float32)
    d[(slice(None),) + dst] = data[(slice(None),) + src]
    s[(slice(None),) + dst] = seg[(slice(None),) + src]
    return d, s


def sample_seed(seed: int, epoch: int, index: int, position: int, stream: int = 0) -> int:
    """The numpy seed of the sample at ``position`` of batch ``index`` of ``epoch`` (``stream`` separates training
    from validation)."""
    return int(np.random.SeedSequence([seed, stream, epoch, index, position]).generate_state(1)[0])


class _Producer:
    """What a worker holds: the sampler and the transforms; makes one batch from its samples' seeds."""

    def __init__(self, sampler: PatchSampler, transforms: Callable | None):
        self.sampler, self.transforms = sampler, transforms

    def __call__(self, jobs: Sequence[tuple[int, int]]) -> dict:
        """``jobs``: (seed, position) per sample of the batch."""
        data, seg, keys = [], [], []
        for seed, position in jobs:
            # batchgenerators draws from numpy's global generator, and its Gaussian noise from python's
            np.random.seed(seed)
            random.seed(seed)
            d, s, key = self.sampler.sample_one(np.random.RandomState(seed), position)
            sample = {"data": d[None], "seg": s[None]}
            if self.transforms is not None:
                sample = self.transforms(**sample)
            data.append(sample["data"][0])
            seg.append(sample["seg"][0])
            keys.append(key)
        return {"data": np.ascontiguousarray(np.stack(data), dtype=np.float32),
                "seg": np.ascontiguousarray(np.stack(seg), dtype=np.float32), "keys": keys}


_WORKER: _Producer | None = None


def _init_worker(producer: _Producer) -> None:
    global _WORKER
    _WORKER = producer


def _produce(jobs: Sequence[tuple[int, int]]) -> dict:
    assert _WORKER is not None
    return _WORKER(jobs)


class BatchStream:
    """Reproducible batches, produced ``num_workers`` processes ahead of the consumer (0 = in-process).

    ``positions``: the positions of each global batch this stream draws (default: all ``sampler.batch_size``; a
    process of a distributed run draws its share). Workers are spawned (not forked), so they never inherit
    torch's thread pools.
    """

    def __init__(self, sampler: PatchSampler, transforms: Callable | None, seed: int, stream: int = 0,
                 num_workers: int = 1, prefetch: int = 2, positions: Sequence[int] | None = None):
        self._producer = _Producer(sampler, transforms)
        self.positions = list(range(sampler.batch_size) if positions is None else positions)
        if not self.positions or not all(0 <= p < sampler.batch_size for p in self.positions):
            raise ValueError(f"positions {self.positions} must be a non-empty subset of 0..{sampler.batch_size - 1}")
        self.seed, self.stream, self.num_workers = seed, stream, num_workers
        self.prefetch = max(1, prefetch) * max(1, num_workers)
        self._pool = None
        if num_workers > 0:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(num_workers, initializer=_init_worker, initargs=(self._producer,))

    def batches(self, epoch: int, count: int) -> Iterator[dict]:
        """Batches ``0 .. count-1`` of ``epoch``, in order."""
        seeds = [[(sample_seed(self.seed, epoch, i, p, self.stream), p) for p in self.positions]
                 for i in range(count)]
        if self._pool is None:
            for s in seeds:
                yield self._producer(s)
            return
        pending: deque = deque()
        it = iter(seeds)
        for s in it:
            pending.append(self._pool.apply_async(_produce, (s,)))
            if len(pending) >= self.prefetch:
                break
        while pending:
            result = pending.popleft().get()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(self._pool.apply_async(_produce, (nxt,)))
            yield result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WaitTimer:
    """Iterates ``items`` and sums in ``seconds`` the time spent waiting for them: with batches from a
    :class:`BatchStream`, whether the loader keeps up with the training step (0 when it does)."""

    def __init__(self, items: Iterable):
        self._items = iter(items)
        self.seconds = 0.0

    def __iter__(self) -> WaitTimer:
        return self

    def __next__(self):
        t0 = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.seconds += time.perf_counter() - t0
