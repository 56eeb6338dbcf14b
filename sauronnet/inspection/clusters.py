"""Do a layer's feature maps form clusters? The metrics ``sauron_inspect`` writes to ``clusters.json``.

Distances are Sauron's δ_opt distance between two maps (DESIGN.md §5): each map min-max normalised over its
spatial axes, average-pooled with kernel/stride 2, then ``d(i, j) = sqrt(mean over space (p_i - p_j)^2)``.
Clusters are the groups of hierarchical clustering with complete linkage cut at a distance threshold (every two
maps of a cluster lie within the threshold of each other); the silhouette score (Rousseeuw 1987, on the same
distances; a singleton's score is 0, as scikit-learn defines it) says how well separated they are: near 1 for
tight, well separated clusters, near 0 for none.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

#: distance below which two maps count as near-duplicates by default (Sauron's τ_max is 0.3 on a relative scale)
DEFAULT_THRESHOLD = 0.1
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
HISTOGRAM_BINS = np.linspace(0.0, 0.5, 11)


def _pool2(x: np.ndarray) -> np.ndarray:
    """Average pooling with kernel = stride = 2 on every spatial axis longer than 1 (floor, like torch)."""
    for axis in range(1, x.ndim):
        n = x.shape[axis]
        if n > 1:
            x = np.take(x, np.arange(n - n % 2), axis=axis)
            shape = list(x.shape)
            shape[axis:axis + 1] = [n // 2, 2]
            x = x.reshape(shape).mean(axis=axis + 1)
    return x


def normalised_maps(maps: np.ndarray) -> np.ndarray:
    """(C, *S) maps → (C, P): min-max normalised per channel (range + 1e-8), pooled, flattened (float64)."""
    m = maps.astype(np.float64).reshape(maps.shape[0], -1)
    lo, hi = m.min(1, keepdims=True), m.max(1, keepdims=True)
    m = ((m - lo) / (hi - lo + 1e-8)).reshape(maps.shape)
    pooled = _pool2(m)
    return pooled.reshape(maps.shape[0], -1)


def pairwise_distances(maps: np.ndarray) -> np.ndarray:
    """(C, C) δ_opt distances between the channels of ``maps`` (C, *S)."""
    v = normalised_maps(maps)
    sq = (v ** 2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * v @ v.T) / v.shape[1]
    d = np.sqrt(np.clip(d2, 0, None))
    np.fill_diagonal(d, 0.0)
    return d


def cluster_labels(distances: np.ndarray, threshold: float) -> np.ndarray:
    """(C,) cluster index per channel: complete linkage cut at ``threshold``."""
    n = distances.shape[0]
    if n == 1:
        return np.zeros(1, dtype=int)
    z = linkage(squareform(distances, checks=False), method="complete")
    return fcluster(z, t=threshold, criterion="distance") - 1


def silhouette(distances: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette score, or None when it is undefined (fewer than 2 or as many clusters as channels)."""
    n, clusters = len(labels), np.unique(labels)
    if not 2 <= len(clusters) <= n - 1:
        return None
    scores = np.zeros(n)
    for i in range(n):
        own = labels == labels[i]
        if own.sum() == 1:
            continue  # a singleton scores 0
        a = distances[i, own].sum() / (own.sum() - 1)
        b = min(distances[i, labels == c].mean() for c in clusters if c != labels[i])
        scores[i] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return float(scores.mean())


def layer_metrics(maps: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Clustering metrics of one layer's maps (C, *S)."""
    d = pairwise_distances(maps)
    n = d.shape[0]
    pairs = d[np.triu_indices(n, 1)]
    labels = cluster_labels(d, threshold)
    out = {"channels": n, "threshold": threshold, "clusters": int(len(np.unique(labels))),
           "cluster_sizes": sorted(np.bincount(labels).tolist(), reverse=True),
           "silhouette": silhouette(d, labels), "labels": labels.tolist()}
    if len(pairs):
        counts, _ = np.histogram(np.clip(pairs, 0, HISTOGRAM_BINS[-1]), HISTOGRAM_BINS)
        out["pairwise_distance"] = {
            "mean": float(pairs.mean()),
            "quantiles": {f"{q:g}": float(np.quantile(pairs, q)) for q in QUANTILES},
            "histogram": {"bin_edges": HISTOGRAM_BINS.tolist(), "counts": counts.tolist(),
                          "note": "distances above the last edge are counted in the last bin"}}
    return out


def summarise(metrics: Mapping[str, dict]) -> dict:
    """Means over the layers (of :func:`layer_metrics` results) with at least two channels: pairwise distance
    (mean, median), clusters, channels, and silhouette (over the layers where it is defined)."""
    ms = [m for m in metrics.values() if m["channels"] > 1]
    if not ms:
        return {"layers": 0}
    sil = [m["silhouette"] for m in ms if m["silhouette"] is not None]
    return {"layers": len(ms),
            "mean_distance": float(np.mean([m["pairwise_distance"]["mean"] for m in ms])),
            "median_distance": float(np.mean([m["pairwise_distance"]["quantiles"]["0.5"] for m in ms])),
            "clusters": float(np.mean([m["clusters"] for m in ms])),
            "channels": float(np.mean([m["channels"] for m in ms])),
            "silhouette": float(np.mean(sil)) if sil else None, "threshold": ms[0]["threshold"]}
