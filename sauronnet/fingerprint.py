"""Dataset fingerprint: spacings, shapes after crop, foreground intensity statistics.

nnU-Net draws 1e8 / N_cases foreground voxels *with replacement* from every case and pools them; its statistics
therefore describe the mixture in which every case weighs the same, whatever its foreground size. We compute
that same mixture with bounded memory:

- mean and std exactly, from each case's foreground mean and variance (equal weights);
- min and max exactly;
- median and the 0.5 / 99.5 percentiles as weighted percentiles of at most ``samples_per_case`` voxels per
  case (all of them when a case has fewer), each weighted 1 / (N_cases · n_kept) — exact for small
  foregrounds, and within a fraction of a percent for large ones.

Peak memory is one case plus ``samples_per_case`` floats per case and channel, instead of nnU-Net's
10^8 / N floats per case per worker.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sauronnet.dataset import Case, DatasetError, RawDataset, read_checked_case
from sauronnet.parallel import map_with_progress
from sauronnet.preprocessing.crop import crop_to_nonzero

logger = logging.getLogger(__name__)

#: Upper bound of foreground voxels kept per case and channel for the percentile estimates.
MAX_SAMPLES_PER_CASE = 500_000
#: Total budget across cases; large datasets keep fewer samples per case (but at least MIN_SAMPLES_PER_CASE).
TOTAL_SAMPLE_BUDGET = 20_000_000
MIN_SAMPLES_PER_CASE = 10_000
SEED = 1234


@dataclass(frozen=True)
class IntensityStats:
    """Foreground intensity statistics of one channel over the whole dataset."""

    mean: float
    median: float
    std: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass(frozen=True)
class Fingerprint:
    """What the planner needs to know about a dataset (``dataset_fingerprint.json``).

    Attributes:
        case_ids: training cases in the order of the per-case lists.
        spacings: per case, (z, y, x) mm.
        shapes_after_crop: per case, (z, y, x) voxels after cropping to the nonzero region.
        foreground_intensity_properties_per_channel: one entry per image channel.
        median_relative_size_after_cropping: median over cases of voxels after crop / voxels before.
    """

    case_ids: tuple[str, ...]
    spacings: tuple[tuple[float, ...], ...]
    shapes_after_crop: tuple[tuple[int, ...], ...]
    foreground_intensity_properties_per_channel: tuple[IntensityStats, ...]
    median_relative_size_after_cropping: float


@dataclass(frozen=True)
class CaseAnalysis:
    """One case's contribution to the fingerprint (kept in memory only)."""

    case_id: str
    spacing: tuple[float, ...]
    shape_after_crop: tuple[int, ...]
    relative_size_after_crop: float
    fg_count: int
    fg_mean: np.ndarray  # (C,)
    fg_var: np.ndarray  # (C,)
    fg_min: np.ndarray  # (C,)
    fg_max: np.ndarray  # (C,)
    fg_samples: np.ndarray  # float32 (C, n_kept)
    problems: tuple[str, ...]


def analyze_case(case: Case, label_values: Sequence[int], samples_per_case: int) -> CaseAnalysis:
    """Reads one case, checks its content, crops it and summarises its foreground intensities."""
    images, seg, geometry, problems = read_checked_case(case, tuple(label_values))
    if problems:
        return _failed(case, problems)
    cropped, seg_c, _ = crop_to_nonzero(images, seg)
    fg = seg_c > 0
    n_fg = int(fg.sum())
    n_ch = images.shape[0]
    if n_fg:
        vals = cropped[:, fg].astype(np.float64)  # (C, n_fg)
        mean, var = vals.mean(1), vals.var(1)
        vmin, vmax = vals.min(1), vals.max(1)
        if n_fg > samples_per_case:
            rng = np.random.RandomState(SEED)
            vals = vals[:, rng.choice(n_fg, samples_per_case, replace=False)]
        samples = vals.astype(np.float32)
    else:
        mean = var = vmin = vmax = np.full(n_ch, np.nan)
        samples = np.zeros((n_ch, 0), np.float32)
    return CaseAnalysis(case.case_id, geometry.spacing_zyx, tuple(int(s) for s in cropped.shape[1:]),
                        float(np.prod(cropped.shape[1:]) / np.prod(images.shape[1:])), n_fg, mean, var, vmin, vmax,
                        samples, ())


def _failed(case: Case, problems: list[str]) -> CaseAnalysis:
    empty = np.zeros(0)
    return CaseAnalysis(case.case_id, (), (), 0.0, 0, empty, empty, empty, empty, np.zeros((0, 0), np.float32),
                        tuple(problems))


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Percentiles ``q`` (0-100) of a weighted sample, interpolating between weight mid-points."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cw = np.cumsum(w)
    positions = (cw - 0.5 * w) / cw[-1]
    return np.interp(np.asarray(q, float) / 100.0, positions, v)


def pool_statistics(analyses: Sequence[CaseAnalysis]) -> tuple[IntensityStats, ...]:
    """Combines per-case foreground summaries into nnU-Net's equal-weight-per-case statistics."""
    with_fg = [a for a in analyses if a.fg_count > 0]
    if not with_fg:
        raise ValueError("no training case has any foreground voxel; check that labelsTr holds the segmentations")
    n_ch = with_fg[0].fg_mean.shape[0]
    stats = []
    for c in range(n_ch):
        means = np.array([a.fg_mean[c] for a in with_fg])
        variances = np.array([a.fg_var[c] for a in with_fg])
        mean = float(means.mean())
        std = float(np.sqrt(max(float((variances + means ** 2).mean()) - mean ** 2, 0.0)))
        values = np.concatenate([a.fg_samples[c] for a in with_fg]).astype(np.float64)
        weights = np.concatenate([np.full(a.fg_samples.shape[1], 1.0 / a.fg_samples.shape[1]) for a in with_fg])
        p005, median, p995 = weighted_percentiles(values, weights, (0.5, 50.0, 99.5))
        stats.append(IntensityStats(mean=mean, median=float(median), std=std,
                                    min=float(min(a.fg_min[c] for a in with_fg)),
                                    max=float(max(a.fg_max[c] for a in with_fg)),
                                    percentile_00_5=float(p005), percentile_99_5=float(p995)))
    return tuple(stats)


def _analyze_star(args: tuple) -> CaseAnalysis:
    return analyze_case(*args)


def extract_fingerprint(dataset: RawDataset, num_processes: int = 1, progress: bool = True) -> Fingerprint:
    """Analyses every training case (in ``num_processes`` worker processes) and builds the fingerprint.

    Raises:
        DatasetError: listing every problem found in any case (nothing is written by this function).
    """
    cases = dataset.training
    per_case = int(min(MAX_SAMPLES_PER_CASE, max(MIN_SAMPLES_PER_CASE, TOTAL_SAMPLE_BUDGET // len(cases))))
    jobs = [(c, dataset.label_values, per_case) for c in cases]
    analyses = map_with_progress(_analyze_star, jobs, num_processes, "Fingerprint", progress)
    problems = [p for a in analyses for p in a.problems]
    if problems:
        raise DatasetError(problems)
    analyses.sort(key=lambda a: a.case_id)
    return Fingerprint(
        case_ids=tuple(a.case_id for a in analyses),
        spacings=tuple(a.spacing for a in analyses),
        shapes_after_crop=tuple(a.shape_after_crop for a in analyses),
        foreground_intensity_properties_per_channel=pool_statistics(analyses),
        median_relative_size_after_cropping=float(np.median([a.relative_size_after_crop for a in analyses])),
    )
