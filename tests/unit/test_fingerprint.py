import numpy as np
import pytest

from sauronnet.dataset import load_raw_dataset
from sauronnet.fingerprint import (CaseAnalysis, extract_fingerprint, pool_statistics, weighted_percentiles)


def _analysis(values, samples=None):
    v = np.asarray(values, float)[None]
    s = v if samples is None else np.asarray(samples, float)[None]
    return CaseAnalysis("c", (1.0, 1.0, 1.0), (1, 1, 1), 1.0, v.shape[1], v.mean(1), v.var(1), v.min(1), v.max(1),
                        s.astype(np.float32), ())


def test_pooled_statistics_weigh_every_case_equally():
    # nnU-Net samples the same number of voxels from every case: the small case counts as much as the big one.
    small, big = [0.0, 2.0], list(np.full(1000, 10.0))
    (st,) = pool_statistics([_analysis(small), _analysis(big)])
    mixture = np.concatenate([np.repeat(small, 500), big])  # equal weights
    assert st.mean == pytest.approx(mixture.mean())
    assert st.std == pytest.approx(mixture.std())
    assert (st.min, st.max) == (0.0, 10.0)
    assert st.percentile_99_5 == 10.0


def test_pooled_statistics_match_the_equal_weight_mixture():
    # nnU-Net draws the same number of voxels (with replacement) from every case; the limit of that is the
    # mixture where each case is replicated to the same size. The big case is subsampled to 50 000 voxels.
    rng = np.random.RandomState(3)
    cases = [rng.normal(m, s, n) for m, s, n in [(100, 20, 5000), (130, 15, 200_000), (90, 30, 40_000)]]
    ours = pool_statistics([_analysis(c, c if len(c) <= 50_000 else rng.choice(c, 50_000, replace=False))
                            for c in cases])[0]
    mixture = np.concatenate([np.repeat(c, 200_000 // len(c)) for c in cases])
    ref = {"mean": mixture.mean(), "std": mixture.std(), "median": np.median(mixture),
           "percentile_00_5": np.percentile(mixture, 0.5), "percentile_99_5": np.percentile(mixture, 99.5)}
    for k, v in ref.items():
        assert getattr(ours, k) == pytest.approx(v, rel=0.002), k


def test_weighted_percentiles_reduce_to_plain_ones_for_equal_weights():
    v = np.random.RandomState(0).normal(size=100_001)
    got = weighted_percentiles(v, np.ones_like(v), [0.5, 50, 99.5])
    np.testing.assert_allclose(got, np.percentile(v, [0.5, 50, 99.5]), atol=1e-3)


def test_case_without_foreground_is_skipped_but_all_empty_fails():
    empty = CaseAnalysis("e", (1.0,) * 3, (1,) * 3, 1.0, 0, *(np.full(1, np.nan),) * 4,
                         np.zeros((1, 0), np.float32), ())
    (st,) = pool_statistics([empty, _analysis([1.0, 3.0])])
    assert st.mean == 2.0
    with pytest.raises(ValueError, match="no training case has any foreground"):
        pool_statistics([empty])


def test_extract_fingerprint_on_small_demo(small_demo_raw):
    ds = load_raw_dataset(small_demo_raw)
    fp = extract_fingerprint(ds, num_processes=2, progress=False)
    assert fp.case_ids == tuple(c.case_id for c in ds.training)
    assert all(s == pytest.approx((2.5, 1.0, 1.0)) for s in fp.spacings)
    # the body ellipsoid does not fill the box: cropping removes something, but not everything
    assert 0.3 < fp.median_relative_size_after_cropping < 1.0
    (st,) = fp.foreground_intensity_properties_per_channel
    assert st.min <= st.percentile_00_5 <= st.median <= st.percentile_99_5 <= st.max
    assert extract_fingerprint(ds, num_processes=1, progress=False) == fp  # deterministic, order-independent
