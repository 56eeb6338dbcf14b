"""Process-pool map with a progress bar, shared by the fingerprint and preprocessing stages."""
from __future__ import annotations

import multiprocessing
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

J = TypeVar("J")
R = TypeVar("R")


def map_with_progress(fn: Callable[[J], R], jobs: Sequence[J], num_processes: int, desc: str,
                      progress: bool = True) -> list[R]:
    """Runs ``fn`` over ``jobs`` (results in completion order) in a fork pool when ``num_processes`` > 1.

    Fork is safe here: preprocessing never imports torch, and it saves re-importing numpy/scipy per worker.
    """
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, unit="case")
    out = []
    with bar:
        if num_processes <= 1 or len(jobs) <= 1:
            for j in jobs:
                out.append(fn(j))
                bar.update()
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(min(num_processes, len(jobs))) as pool:
                for r in pool.imap_unordered(fn, jobs):
                    out.append(r)
                    bar.update()
    return out
