"""Patch sampling from memory-mapped preprocessed cases, and a reproducible background batch stream.

:class:`PatchSampler` follows nnU-Net's ``nnUNetDataLoader``: the last ⌈33 %⌉ of every batch is forced to
contain foreground (a random class with foreground, a random voxel of it, as patch centre); the others are
uniform over the padded image. 2D configurations sample a random slice of the 3D case.

:class:`BatchStream` makes batch ``i`` of epoch ``e`` a pure function of ``(seed, e, i)``: the worker seeds
numpy's and python's global generators (which batchgenerators uses) from those three numbers before sampling
and augmenting.
Batches are therefore identical whatever the number of workers, and a resumed run regenerates exactly the
batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import multiprocessing
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from sauronnet.preprocessing.preprocess import CaseProperties, load_case

OVERSAMPLE_FOREGROUND = 0.33


@dataclass
class PatchSampler:
    """Samples ``(data, seg)`` batches of ``sample_size`` from the cases in ``folder``.

    Returns dicts with ``data`` float32 (B, C, *sample_size), ``seg`` float32 (B, 1, *sample_size) (-1 where the
    patch leaves the image), ``keys`` the case ids.
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

    def sample(self, rng: np.random.RandomState) -> dict:
        dim = len(self.sample_size)
        data_out, seg_out, keys = [], [], []
        for b in range(self.batch_size):
            key = self.case_ids[rng.randint(len(self.case_ids))]
            data, seg, props = self._case(key)
            fg = self.force_foreground(b)
            centre = self._foreground_voxel(props, rng) if fg else None
            if dim == 2:
                z = centre[0] if centre is not None else rng.randint(data.shape[1])
                data, seg = data[:, z], seg[:, z]
                centre = centre[1:] if centre is not None else None
            d, s = crop_patch(data, seg, self._bbox(data.shape[1:], centre, rng), self.sample_size)
            data_out.append(d)
            seg_out.append(s)
            keys.append(key)
        return {"data": np.stack(data_out).astype(np.float32), "seg": np.stack(seg_out).astype(np.float32),
                "keys": keys}

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


def batch_seed(seed: int, epoch: int, index: int, stream: int = 0) -> int:
    """The numpy seed of batch ``index`` of ``epoch`` (``stream`` separates training from validation)."""
    return int(np.random.SeedSequence([seed, stream, epoch, index]).generate_state(1)[0])


class _Producer:
    """What a worker holds: the sampler and the transforms; makes one batch from its seed."""

    def __init__(self, sampler: PatchSampler, transforms: Callable | None):
        self.sampler, self.transforms = sampler, transforms

    def __call__(self, seed: int) -> dict:
        # batchgenerators draws from numpy's global generator, and its Gaussian noise from python's
        np.random.seed(seed)
        random.seed(seed)
        rng = np.random.RandomState(seed)
        batch = self.sampler.sample(rng)
        keys = batch.pop("keys")
        if self.transforms is not None:
            batch = self.transforms(**batch)
        return {"data": np.ascontiguousarray(batch["data"], dtype=np.float32),
                "seg": np.ascontiguousarray(batch["seg"], dtype=np.float32), "keys": keys}


_WORKER: _Producer | None = None


def _init_worker(producer: _Producer) -> None:
    global _WORKER
    _WORKER = producer


def _produce(seed: int) -> dict:
    assert _WORKER is not None
    return _WORKER(seed)


class BatchStream:
    """Reproducible batches, produced ``num_workers`` processes ahead of the consumer (0 = in-process).

    Workers are spawned (not forked), so they never inherit torch's thread pools.
    """

    def __init__(self, sampler: PatchSampler, transforms: Callable | None, seed: int, stream: int = 0,
                 num_workers: int = 1, prefetch: int = 2):
        self._producer = _Producer(sampler, transforms)
        self.seed, self.stream, self.num_workers = seed, stream, num_workers
        self.prefetch = max(1, prefetch) * max(1, num_workers)
        self._pool = None
        if num_workers > 0:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(num_workers, initializer=_init_worker, initargs=(self._producer,))

    def batches(self, epoch: int, count: int) -> Iterator[dict]:
        """Batches ``0 .. count-1`` of ``epoch``, in order."""
        seeds = [batch_seed(self.seed, epoch, i, self.stream) for i in range(count)]
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
