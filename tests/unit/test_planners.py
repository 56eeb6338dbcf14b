"""Planner parity with nnU-Net v2.8.1.

Expected values are literals printed by nnU-Net v2.8.1's own planner (``benchmarks/nnunet_reference_plans.py``
for the hand-made fingerprints, ``benchmarks/plan_parity.py`` for the generated datasets), recorded here so the
test never needs nnU-Net installed.
"""
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import toy64_spec
from benchmarks.nnunet_reference_plans import CASES, STATS
from benchmarks.plan_parity import our_fields
from planners import PLANNERS, CpuPlanner, NnUNetPlanner
from planners.cpu import TARGET_FORWARD_GFLOPS
from planners.topology import pool_and_conv_props
from sauronnet.dataset import RawDataset, load_raw_dataset
from sauronnet.demo import DemoSpec, write_demo_dataset
from sauronnet.fingerprint import Fingerprint, IntensityStats, extract_fingerprint
from sauronnet.serialization import to_jsonable


def fields(cfg):
    """The compared fields of a configuration, extracted like benchmarks/plan_parity.py does."""
    return our_fields(to_jsonable(cfg))


K3, K133 = [3, 3, 3], [1, 3, 3]
S2, S122, S1 = [2, 2, 2], [1, 2, 2], [1, 1, 1]

# nnU-Net v2.8.1, nnUNetv2_plan_experiment on the fingerprints of benchmarks/nnunet_reference_plans.py
NNUNET_281 = {
    ("anisotropic", "2d"): {"spacing": [0.7, 0.7], "patch_size": [256, 256], "batch_size": 25, "n_stages": 7,
                            "features_per_stage": [32, 64, 128, 256, 512, 512, 512], "kernel_sizes": [[3, 3]] * 7,
                            "strides": [[1, 1]] + [[2, 2]] * 6, "normalization": ["zscore"],
                            "use_mask_for_norm": [False], "batch_dice": True},
    ("anisotropic", "3d_fullres"): {"spacing": [4.0, 0.7, 0.7], "patch_size": [28, 256, 256], "batch_size": 2,
                                    "n_stages": 7, "features_per_stage": [32, 64, 128, 256, 320, 320, 320],
                                    "kernel_sizes": [K133, K133] + [K3] * 5,
                                    "strides": [S1, S122, S122, S2, S2, S122, S122], "normalization": ["zscore"],
                                    "use_mask_for_norm": [False], "batch_dice": False},
    ("transposed", "2d"): {"spacing": [1.0, 1.0], "patch_size": [112, 128], "batch_size": 13, "n_stages": 5,
                           "features_per_stage": [32, 64, 128, 256, 512], "kernel_sizes": [[3, 3]] * 5,
                           "strides": [[1, 1]] + [[2, 2]] * 4, "normalization": ["zscore"],
                           "use_mask_for_norm": [False], "batch_dice": True},
    ("transposed", "3d_fullres"): {"spacing": [3.2, 1.0, 1.0], "patch_size": [40, 112, 128], "batch_size": 2,
                                   "n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320],
                                   "kernel_sizes": [K133] + [K3] * 4, "strides": [S1, S122, S2, S2, S2],
                                   "normalization": ["zscore"], "use_mask_for_norm": [False], "batch_dice": False},
    ("large_ct", "2d"): {"spacing": [0.8, 0.8], "patch_size": [512, 512], "batch_size": 12, "n_stages": 8,
                         "features_per_stage": [32, 64, 128, 256, 512, 512, 512, 512], "kernel_sizes": [[3, 3]] * 8,
                         "strides": [[1, 1]] + [[2, 2]] * 7, "normalization": ["ct"], "use_mask_for_norm": [False],
                         "batch_dice": True},
    ("large_ct", "3d_fullres"): {"spacing": [2.5, 0.8, 0.8], "patch_size": [80, 160, 160], "batch_size": 2,
                                 "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
                                 "kernel_sizes": [K133] + [K3] * 5, "strides": [S1, S122, S2, S2, S2, S2],
                                 "normalization": ["ct"], "use_mask_for_norm": [False], "batch_dice": True},
    ("large_ct", "3d_lowres"): {"spacing": [3.89492, 2.00006, 2.00006], "patch_size": [128, 128, 128],
                                "batch_size": 2, "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
                                "kernel_sizes": [K3] * 6, "strides": [S1] + [S2] * 5, "normalization": ["ct"],
                                "use_mask_for_norm": [False], "batch_dice": False},
    ("two_channels", "2d"): {"spacing": [1.0, 1.0], "patch_size": [96, 96], "batch_size": 48, "n_stages": 5,
                             "features_per_stage": [32, 64, 128, 256, 512], "kernel_sizes": [[3, 3]] * 5,
                             "strides": [[1, 1]] + [[2, 2]] * 4, "normalization": ["ct", "zscore"],
                             "use_mask_for_norm": [False, True], "batch_dice": True},
    ("two_channels", "3d_fullres"): {"spacing": [1.5, 1.0, 1.0], "patch_size": [80, 96, 96], "batch_size": 2,
                                     "n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320],
                                     "kernel_sizes": [K3] * 5, "strides": [S1] + [S2] * 4,
                                     "normalization": ["ct", "zscore"], "use_mask_for_norm": [False, True],
                                     "batch_dice": False},
}
TRANSPOSE = {"anisotropic": (0, 1, 2), "transposed": (2, 0, 1), "large_ct": (0, 1, 2), "two_channels": (0, 1, 2)}


def plan_from_table(name, planner=None):
    channels, n_train, spacings, shapes, rel = CASES[name]
    fp = Fingerprint(tuple(f"c{i}" for i in range(len(spacings))), tuple(map(tuple, spacings)),
                     tuple(map(tuple, shapes)), tuple(IntensityStats(**STATS) for _ in channels), rel)
    ds = RawDataset(Path(name), tuple(channels.values()), {"background": 0, "a": 1}, n_train, ".nii.gz", (), ())
    return (planner or NnUNetPlanner()).plan(ds, fp)


@pytest.mark.parametrize("name", sorted(CASES))
def test_nnunet_preset_matches_nnunet_281(name):
    plans = plan_from_table(name)
    assert plans.transpose_forward == TRANSPOSE[name]
    expected = {c: v for (n, c), v in NNUNET_281.items() if n == name}
    assert sorted(plans.configurations) == sorted(expected)
    for c, v in expected.items():
        assert fields(plans.configurations[c]) == v, c


def test_anisotropy_rule_uses_tenth_percentile():
    plans = plan_from_table("anisotropic")
    assert plans.configurations["3d_fullres"].spacing[0] == pytest.approx(4.0)  # median would be 5.0
    assert plans.original_median_spacing_after_transp[0] == pytest.approx(5.0)


def test_transpose_backward_inverts_forward():
    plans = plan_from_table("transposed")
    assert list(plans.transpose_forward[i] for i in plans.transpose_backward) == [0, 1, 2]


def _toy_plans(tmp_path_factory, spec):
    ds = load_raw_dataset(write_demo_dataset(tmp_path_factory.mktemp("raw"), spec))
    return ds, extract_fingerprint(ds, num_processes=2, progress=False)


@pytest.fixture(scope="module")
def toy64(tmp_path_factory):
    return _toy_plans(tmp_path_factory, toy64_spec())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return _toy_plans(tmp_path_factory, DemoSpec())


def test_toy64_matches_nnunet_281(toy64):
    # nnU-Net v2.8.1 on this generated set (benchmarks/plan_parity.py --toy64); also DESIGN.md §4's numbers.
    plans = NnUNetPlanner().plan(*toy64)
    assert fields(plans.configurations["3d_fullres"]) == {
        "spacing": [2.5, 1.0, 1.0], "patch_size": [64, 80, 64], "batch_size": 2, "n_stages": 5,
        "features_per_stage": [32, 64, 128, 256, 320], "kernel_sizes": [K133] + [K3] * 4,
        "strides": [S1, S122, S2, S2, S2], "normalization": ["zscore"], "use_mask_for_norm": [False],
        "batch_dice": False}
    assert fields(plans.configurations["2d"]) == {
        "spacing": [1.0, 1.0], "patch_size": [80, 64], "batch_size": 26, "n_stages": 5,
        "features_per_stage": [32, 64, 128, 256, 512], "kernel_sizes": [[3, 3]] * 5,
        "strides": [[1, 1]] + [[2, 2]] * 4, "normalization": ["zscore"], "use_mask_for_norm": [False],
        "batch_dice": True}
    # DESIGN.md: 172 GFLOP per forward for one sample of this network
    assert plans.configurations["3d_fullres"].estimated_forward_gflops / 2 == pytest.approx(172.3, abs=0.1)


def test_demo_matches_nnunet_281(demo):
    # nnU-Net v2.8.1 on the demo dataset (benchmarks/plan_parity.py sauron_data/raw/Dataset001_Demo)
    plans = NnUNetPlanner().plan(*demo)
    assert fields(plans.configurations["3d_fullres"]) == {
        "spacing": [2.5, 1.0, 1.0], "patch_size": [24, 56, 64], "batch_size": 2, "n_stages": 4,
        "features_per_stage": [32, 64, 128, 256], "kernel_sizes": [K133] + [K3] * 3,
        "strides": [S1, S122, S2, S2], "normalization": ["zscore"], "use_mask_for_norm": [True],
        "batch_dice": False}
    assert fields(plans.configurations["2d"]) == {
        "spacing": [1.0, 1.0], "patch_size": [56, 64], "batch_size": 13, "n_stages": 4,
        "features_per_stage": [32, 64, 128, 256], "kernel_sizes": [[3, 3]] * 4,
        "strides": [[1, 1]] + [[2, 2]] * 3, "normalization": ["zscore"], "use_mask_for_norm": [True],
        "batch_dice": True}


@pytest.mark.parametrize("name", sorted(CASES))
def test_cpu_preset_keeps_spacing_and_fits_budget(name):
    gpu, cpu = plan_from_table(name), plan_from_table(name, CpuPlanner())
    assert cpu.preset == "cpu" and cpu.transpose_forward == gpu.transpose_forward
    for c, cfg in cpu.configurations.items():
        assert cfg.network.features_per_stage[0] == 8
        per_batch2 = cfg.estimated_forward_gflops / cfg.batch_size * 2
        assert per_batch2 <= TARGET_FORWARD_GFLOPS + 1e-9
        assert cfg.network.strides == pool_and_conv_props(cfg.spacing, cfg.patch_size).strides
    for c in ("3d_fullres", "2d"):
        # same target spacing; the patch never exceeds nnU-Net's
        assert cpu.configurations[c].spacing == gpu.configurations[c].spacing
        assert all(p <= g for p, g in zip(cpu.configurations[c].patch_size, gpu.configurations[c].patch_size))
    if "3d_lowres" in cpu.configurations:
        # smaller patches cover less of the image, so nnU-Net's 25 % rule may add a low-resolution stage
        # (nnU-Net tests the unrounded median size; the stored one is rounded, hence the small slack)
        low = cpu.configurations["3d_lowres"]
        assert np.prod(low.patch_size) / np.prod(low.median_image_size_in_voxels) >= 0.24


def test_cpu_preset_on_demo_is_a_few_gflop(demo):
    cfg = CpuPlanner().plan(*demo).configurations["3d_fullres"]
    assert 1.0 <= cfg.estimated_forward_gflops <= TARGET_FORWARD_GFLOPS
    assert cfg.batch_size >= 2 and np.prod(cfg.patch_size) >= 16 ** 3


def test_registry():
    assert set(PLANNERS) == {"nnunet", "cpu"}
