import numpy as np
import pytest
import torch

from sauronnet.inspection.clusters import (cluster_labels, layer_metrics, pairwise_distances, silhouette,
                                           summarise)
from sauronnet.pruning.distances import delta_opt


def two_clusters(rng, n=(3, 4), noise=0.0):
    """Channels that are scaled/shifted copies (identical after min-max) of two different maps."""
    a, b = rng.random((8, 8, 8)), rng.random((8, 8, 8))
    chans = [2 * a + 1 + noise * rng.random(a.shape) for _ in range(n[0])]
    chans += [0.5 * b - 3 + noise * rng.random(b.shape) for _ in range(n[1])]
    return np.stack(chans).astype(np.float32)


def test_two_exact_clusters():
    maps = two_clusters(np.random.default_rng(0))
    m = layer_metrics(maps, threshold=0.1)
    assert m["clusters"] == 2 and m["cluster_sizes"] == [4, 3]
    assert m["silhouette"] == pytest.approx(1.0, abs=1e-3)
    assert m["pairwise_distance"]["quantiles"]["0"] == pytest.approx(0, abs=1e-4)
    assert sum(m["pairwise_distance"]["histogram"]["counts"]) == 7 * 6 // 2


def test_no_clusters_in_independent_noise():
    maps = np.random.default_rng(1).random((6, 8, 8, 8)).astype(np.float32)
    m = layer_metrics(maps, threshold=0.1)
    assert m["clusters"] == 6 and m["silhouette"] is None


def test_distance_is_the_clustering_terms():
    maps = np.random.default_rng(2).random((5, 8, 8, 8)).astype(np.float32)
    d = pairwise_distances(maps)
    ref = delta_opt(torch.from_numpy(maps)[None].double(), 2)  # mean over channels 1..4 of d(0, c), eps 1e-8
    assert np.sqrt(d[0, 1:] ** 2 + 1e-8).mean() == pytest.approx(float(ref), rel=1e-5)
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)


def test_silhouette_matches_scikit_learn():
    from sklearn.metrics import silhouette_score
    maps = two_clusters(np.random.default_rng(3), noise=0.3)
    d = pairwise_distances(maps)
    labels = cluster_labels(d, 0.08)  # between the within- and between-cluster distances
    assert 2 <= len(set(labels)) < len(labels)
    assert silhouette(d, labels) == pytest.approx(silhouette_score(d, labels, metric="precomputed"), abs=1e-9)


def test_summary_averages_layers():
    rng = np.random.default_rng(4)
    per = {"a": layer_metrics(two_clusters(rng)), "b": layer_metrics(rng.random((4, 8, 8, 8))),
           "c": layer_metrics(rng.random((1, 8, 8, 8)))}
    s = summarise(per)
    assert s["layers"] == 2 and s["channels"] == pytest.approx(5.5) and s["clusters"] == pytest.approx(3.0)
    assert s["silhouette"] == pytest.approx(per["a"]["silhouette"])  # b's is undefined
