"""Filter-importance criteria of the baseline pruning methods; a higher score means a more important filter.

- :func:`l1_scores`: the L1 norm of each filter's kernel weights (Li et al., "Pruning filters for efficient
  ConvNets", ICLR 2017): small-norm filters produce weak maps and are removed first.
- :func:`fpgm_scores`: the sum of Euclidean distances from each filter to all others (He et al., "Filter pruning
  via geometric median", CVPR 2019): that sum is smallest for the filters nearest the layer's geometric median,
  which the others can replace, so they are removed first.
- :func:`random_scores`: a seeded uniform draw, the control that shows what a criterion is worth.

Filters come as rows of a (C, K) matrix (:func:`sauronnet.pruning.surgery.filters`).
"""
from __future__ import annotations

import numpy as np
import torch


def l1_scores(filters: torch.Tensor) -> torch.Tensor:
    """(C,) L1 norm of each row of ``filters`` (C, K)."""
    return filters.abs().sum(dim=1)


def fpgm_scores(filters: torch.Tensor) -> torch.Tensor:
    """(C,) sum of Euclidean distances from each row of ``filters`` (C, K) to every other row (float64)."""
    f = filters.double()
    return torch.cdist(f, f).sum(dim=1)


def random_scores(n: int, *seed: int) -> torch.Tensor:
    """(n,) uniform scores from a generator seeded by ``seed`` (e.g. run seed, epoch, layer index)."""
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    return torch.from_numpy(rng.random(n))


def keep_highest(scores: torch.Tensor, remove: int) -> torch.Tensor:
    """Sorted indices of the channels kept when the ``remove`` lowest-scored ones go (ties: lower index kept)."""
    n = scores.numel()
    if not 0 <= remove < n:
        raise ValueError(f"cannot remove {remove} of {n} channels (at least one must remain)")
    order = torch.argsort(scores, stable=True, descending=True)
    return torch.sort(order[:n - remove]).values
