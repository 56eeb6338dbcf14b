import pytest
import torch

from sauronnet.pruning.criteria import fpgm_scores, keep_highest, l1_scores, random_scores

# five filters of two weights: (0, 0) has the smallest L1 norm, (1, 1) lies nearest the geometric median
POINTS = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [10.0, 10.0]])


def test_l1_removes_the_filter_with_the_smallest_norm():
    f = torch.tensor([[1.0, -2.0, 0.5], [0.1, -0.1, 0.0], [3.0, 0.0, 0.0]])
    assert l1_scores(f).tolist() == pytest.approx([3.5, 0.2, 3.0])
    assert keep_highest(l1_scores(f), 1).tolist() == [0, 2]
    assert keep_highest(l1_scores(POINTS), 1).tolist() == [1, 2, 3, 4]  # the zero filter


def test_fpgm_removes_the_filter_nearest_the_geometric_median():
    scores = fpgm_scores(POINTS)
    assert int(scores.argmin()) == 3  # (1, 1): sum of distances 4.24 + 12.73
    assert keep_highest(scores, 1).tolist() == [0, 1, 2, 4]
    removed = set(range(5)) - set(keep_highest(scores, 2).tolist())
    assert removed in ({3, 1}, {3, 2})  # then one of the two tied corners, never the origin or the outlier


def test_random_scores_are_seeded():
    assert torch.equal(random_scores(10, 1, 2, 3), random_scores(10, 1, 2, 3))
    assert not torch.equal(random_scores(10, 1, 2, 3), random_scores(10, 1, 2, 4))


def test_keep_highest_keeps_at_least_one():
    assert keep_highest(torch.tensor([0.5, 0.5, 0.1]), 1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="at least one"):
        keep_highest(torch.ones(3), 3)
