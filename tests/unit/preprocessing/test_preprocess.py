import numpy as np
import pytest

from planners import CpuPlanner
from sauronnet.dataset import load_raw_dataset
from sauronnet.fingerprint import IntensityStats, extract_fingerprint
from sauronnet.io import Geometry
from sauronnet.plans import ConfigurationPlan, NetworkPlan, Plans
from sauronnet.preprocessing.preprocess import (CaseProperties, load_case, preprocess_case, preprocess_dataset,
                                                restore_seg, sample_class_locations)
from sauronnet.serialization import from_jsonable, to_jsonable

NET = NetworkPlan((4, 8), ((3, 3, 3), (3, 3, 3)), ((1, 1, 1), (2, 2, 2)), (2, 2), (2,))
STATS = IntensityStats(mean=0.0, median=0.0, std=1.0, min=-1.0, max=1.0, percentile_00_5=-1.0, percentile_99_5=1.0)


def make_plans(spacing, transpose=(0, 1, 2)):
    cfg = ConfigurationPlan(spacing=tuple(spacing), patch_size=(8, 8, 8), batch_size=2,
                            median_image_size_in_voxels=(8.0, 8.0, 8.0), normalization_schemes=("zscore",),
                            use_mask_for_norm=(True,), resampling_data_order=3, resampling_data_order_z=0,
                            resampling_seg_order=1, resampling_seg_order_z=0, resampling_probabilities_order=1,
                            batch_dice=False, network=NET, estimated_forward_gflops=0.1)
    backward = tuple(transpose.index(i) for i in range(3))
    return Plans("Dataset009_T", "nnunet", ("MR",), {"background": 0, "a": 1, "b": 2}, (1.0,) * 3, (8,) * 3,
                 tuple(transpose), backward, (STATS,), {"3d_fullres": cfg})


def case(shape=(9, 11, 13), seed=0):
    rng = np.random.RandomState(seed)
    seg = np.zeros(shape, np.uint8)
    seg[2:6, 3:9, 4:10] = 1
    seg[3:5, 4:6, 5:12] = 2
    img = np.zeros((1, *shape), np.float32)
    img[0, 1:8, 1:10, 2:12] = rng.normal(100, 10, (7, 9, 10))  # zero border: cropping removes it
    img[0][seg > 0] += 40
    img[0, 1:3, 1:3, 2:4] = 0  # a zero corner inside the crop box: outside the nonzero mask
    return img, seg


@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_label_round_trip_is_exact_for_isotropic_data(transpose):
    img, seg = case()
    geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), seg.shape)
    plans = make_plans((1.0, 1.0, 1.0), transpose)
    cfg = plans.configuration("3d_fullres")
    data, seg_p, props = preprocess_case(img, seg, geo, "c", plans, cfg)
    assert seg_p.shape[1:] == data.shape[1:] == tuple(props.bbox[i][1] - props.bbox[i][0] for i in range(3))
    assert (seg_p == -1).any()  # outside the nonzero mask is marked
    np.testing.assert_array_equal(restore_seg(seg_p[0], props, plans, cfg), seg)


def test_resampling_to_coarser_spacing_and_back_keeps_shape_and_labels():
    img, seg = case((12, 16, 16))
    geo = Geometry((1.0, 1.0, 1.0), (0.0,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1), seg.shape)
    plans = make_plans((1.5, 2.0, 2.0))
    cfg = plans.configuration("3d_fullres")
    data, seg_p, props = preprocess_case(img, seg, geo, "c", plans, cfg)
    assert data.shape[1:] == tuple(round(s * 1.0 / t) for s, t in zip(props.shape_after_cropping, (1.5, 2, 2)))
    back = restore_seg(seg_p[0], props, plans, cfg)
    assert back.shape == seg.shape and set(np.unique(back)) <= {0, 1, 2}
    assert (back == seg).mean() > 0.9


def test_properties_json_round_trip():
    img, seg = case()
    geo = Geometry((1.0, 1.0, 1.0), (0.0,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1), seg.shape)
    plans = make_plans((1.0, 1.0, 1.0))
    _, _, props = preprocess_case(img, seg, geo, "c", plans, plans.configuration("3d_fullres"))
    assert from_jsonable(CaseProperties, to_jsonable(props)) == props
    assert set(props.class_locations) == {1, 2}


def test_class_locations_sampling_bounds():
    seg = np.zeros((100, 100, 120), np.int8)
    seg[:, :, :100] = 1  # 1e6 voxels: 1 % is 10 000
    seg[:, :, 100:110] = 2  # 1e5 voxels: capped at 10 000
    seg[0, 0, 119] = 3  # a single voxel
    locs = sample_class_locations(seg, [1, 2, 3, 4])
    assert len(locs[1]) == 10_000 and len(locs[2]) == 10_000 and locs[3] == ((0, 0, 119),) and locs[4] == ()
    assert all(seg[tuple(p)] == 2 for p in locs[2][:100])
    big = np.zeros((200, 100, 100), np.int8)
    big[:] = 1  # 2e6 voxels: at least 1 % = 20 000
    assert len(sample_class_locations(big, [1])[1]) == 20_000


def test_2d_configuration_keeps_slice_spacing():
    plans = make_plans((1.0, 1.0, 1.0))
    net2d = NetworkPlan((4, 8), ((3, 3), (3, 3)), ((1, 1), (2, 2)), (1, 1), (1,))
    cfg2d = ConfigurationPlan(**{**plans.configuration("3d_fullres").__dict__, "spacing": (0.5, 0.5),
                                 "patch_size": (8, 8), "network": net2d})
    img, seg = case()
    geo = Geometry((1.0, 1.0, 3.0), (0.0,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1), seg.shape)
    data, _, props = preprocess_case(img, seg, geo, "c", plans, cfg2d)
    assert props.target_spacing == (3.0, 0.5, 0.5)
    assert data.shape[1] == props.shape_after_cropping[0]


def test_preprocess_dataset_writes_memory_mappable_cases(small_demo_raw, tmp_path):
    ds = load_raw_dataset(small_demo_raw)
    plans = CpuPlanner().plan(ds, extract_fingerprint(ds, progress=False))
    ids = preprocess_dataset(ds, plans, "3d_fullres", tmp_path, num_processes=2, progress=False)
    assert ids == sorted(c.case_id for c in ds.training)
    data, seg, props = load_case(tmp_path, ids[0])
    assert isinstance(data, np.memmap) and data.dtype == np.float32 and seg.dtype == np.int8
    assert data.shape[1:] == seg.shape[1:] and data.shape[0] == 1
    assert set(np.unique(seg)) <= {-1, 0, 1, 2}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    # normalised inside the mask
    inside = np.asarray(data[0])[np.asarray(seg[0]) >= 0]
    assert abs(inside.mean()) < 0.1 and abs(inside.std() - 1) < 0.1
