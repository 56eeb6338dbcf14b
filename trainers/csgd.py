"""C-SGD (Ding et al., "Centripetal SGD for pruning very deep convolutional networks with complicated
structure", CVPR 2019): the cluster-based method the Sauron paper compared with.

Before the first step each layer's filters are clustered by k-means on their kernels into as many clusters as
the layer's target width. Every step then (1) gives every filter of a cluster the cluster's mean gradient and (2)
moves every filter a fraction ε of the way to its cluster's mean ("centripetal"), for all the parameters that
make the channel's map (conv weight and bias, the norm's γ and β; transposed conv weight and bias). The members
of a cluster become equal, so at the last epoch end each cluster is merged into one channel whose consumers
receive the summed input weights of its members — the merged network computes what the clustered one did.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sauronnet.pruning.prune import merge_layer
from sauronnet.pruning.surgery import filter_parameters, filters
from trainers.pruning import MatchConfig, PruningTrainer, TargetMixin

#: with ``centripetal`` None, ε is chosen so that the spread inside a cluster shrinks to this fraction by the end
RESIDUAL_SPREAD = 1e-3


@dataclass(frozen=True)
class CSGDConfig(MatchConfig):
    #: centripetal strength ε per step (None: chosen so the spread inside each cluster shrinks to 1e-3 of its
    #: start by the last step; the paper's 3e-3 assumes hundreds of thousands of steps)
    centripetal: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.centripetal is not None and not 0 < self.centripetal < 1:
            raise ValueError(f"centripetal must lie in (0, 1), got {self.centripetal}")


def kmeans_clusters(rows: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """A partition of the rows (C, K) into ``k`` k-means clusters, each a sorted int64 tensor."""
    from sklearn.cluster import KMeans

    n = rows.shape[0]
    if k >= n:
        return [torch.tensor([i]) for i in range(n)]
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(rows.double().cpu().numpy())
    return [torch.from_numpy(np.flatnonzero(labels == c)) for c in np.unique(labels)]


def averaging_matrix(clusters: list[torch.Tensor], n: int) -> torch.Tensor:
    """(n, n) matrix M with M[i, j] = 1/|H| when channels i and j share cluster H: ``M @ x`` replaces every
    row of x by its cluster's mean."""
    m = torch.zeros(n, n, dtype=torch.float64)
    for c in clusters:
        m[c.unsqueeze(1), c.unsqueeze(0)] = 1.0 / c.numel()
    return m


def _apply_rows(m: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    moved = x.movedim(dim, 0)
    out = (m.to(x.dtype) @ moved.reshape(moved.shape[0], -1)).reshape(moved.shape)
    return out.movedim(0, dim)


class CSGDTrainer(TargetMixin, PruningTrainer):
    name = "CSGDTrainer"
    config_class = CSGDConfig

    def __init__(self, *args, **kwargs):
        self.clusters: dict[str, list[torch.Tensor]] | None = None
        super().__init__(*args, **kwargs)

    @property
    def strength(self) -> float:
        c = self.config
        if c.centripetal is not None:
            return c.centripetal
        return 1 - RESIDUAL_SPREAD ** (1 / max(1, c.epochs * c.iterations_per_epoch))

    def train_epoch(self, epoch, batches, progress=True):
        if self.clusters is None:
            self.clusters = {name: kmeans_clusters(filters(self.network, name), self.target_widths[name],
                                                   self.config.seed) for name in self.network.widths()}
            self._matrices = None
        return super().train_epoch(epoch, batches, progress)

    def _averaging(self) -> dict[str, torch.Tensor]:
        if getattr(self, "_matrices", None) is None:
            widths = self.network.widths()
            self._matrices = {n: averaging_matrix(c, widths[n]).to(self.device) for n, c in self.clusters.items()
                              if len(c) < widths[n]}
        return self._matrices

    def on_gradients(self):
        for name, m in self._averaging().items():
            for p, dim in filter_parameters(self.network, name):
                if p.grad is not None:
                    p.grad = _apply_rows(m, p.grad, dim)

    @torch.no_grad()
    def on_step_end(self):
        eps = self.strength
        for name, m in self._averaging().items():
            for p, dim in filter_parameters(self.network, name):
                p.data.add_(_apply_rows(m, p.data, dim) - p.data, alpha=eps)

    def apply(self, epoch, keep):
        if epoch != self.config.epochs - 1:
            return {}
        removed = {name: merge_layer(self.network, self.optimizer, name, c) for name, c in self.clusters.items()}
        self.clusters, self._matrices = {n: [torch.tensor([i]) for i in range(w)]
                                         for n, w in self.network.widths().items()}, None
        return removed

    def summary_extras(self):
        return {"centripetal": self.strength}

    def checkpoint_extras(self):
        return {"clusters": None if self.clusters is None else
                {n: [c.tolist() for c in cs] for n, cs in self.clusters.items()}}

    def load_checkpoint_extras(self, extras):
        cl = extras.get("clusters")
        self.clusters = None if cl is None else {n: [torch.tensor(c, dtype=torch.long) for c in cs]
                                                 for n, cs in cl.items()}
        self._matrices = None


__all__ = ["CSGDTrainer", "CSGDConfig", "kmeans_clusters", "averaging_matrix"]
