"""The predictor on untrained networks: geometry of the outputs and fold ensembling."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sauronnet.inference.predictor import Predictor
from sauronnet.inference.torch_network import TorchNetwork
from sauronnet.io import read_images, write_seg
from sauronnet.networks.unet import build_network
from tests.unit.preprocessing.test_preprocess import make_plans

OBLIQUE = tuple(np.array([[0.0, -1.0, 0.0], [0.8660254, 0.0, -0.5], [0.5, 0.0, 0.8660254]]).ravel())


def _predictor(seeds, mirror=False, average_logits=False, precision="fp32") -> Predictor:
    plans = make_plans((1.0, 1.0, 1.0), transpose=(2, 0, 1))
    cfg = plans.configuration("3d_fullres")
    nets = []
    for s in seeds:
        torch.manual_seed(s)
        nets.append(build_network(cfg.network, 1, plans.num_classes, deep_supervision=False).eval())
    return Predictor([TorchNetwork(n, "cpu", precision) for n in nets], plans, "3d_fullres", mirror=mirror,
                     average_logits=average_logits)


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd"])
def test_output_lies_exactly_on_the_input(tmp_path, ending):
    arr = np.random.RandomState(0).normal(100, 20, (9, 14, 11)).astype(np.float32)
    arr[:, :2] = 0  # a zero border that preprocessing crops away
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.9, 1.3, 2.1))
    img.SetOrigin((-40.25, 12.5, 301.0))
    img.SetDirection(OBLIQUE)
    src = tmp_path / f"case_0000{ending}"
    sitk.WriteImage(img, str(src))
    data, geo = read_images([src])
    pred = _predictor([0]).predict(data, geo)
    assert pred.labels.shape == arr.shape
    out = tmp_path / f"case{ending}"
    write_seg(pred.labels, geo, out)
    back, ref = sitk.ReadImage(str(out)), sitk.ReadImage(str(src))
    assert back.GetSize() == ref.GetSize()
    # (NRRD folds spacing into "space directions": SimpleITK's own round trip may move the last bit)
    assert np.allclose(back.GetSpacing(), ref.GetSpacing(), rtol=1e-12)
    assert np.allclose(back.GetOrigin(), ref.GetOrigin(), rtol=1e-12)
    assert np.allclose(back.GetDirection(), ref.GetDirection(), atol=1e-12)
    assert (sitk.GetArrayFromImage(back)[:, :2] == 0).all()  # outside the crop box: background


def test_two_fold_ensemble_is_the_mean_of_the_folds():
    data = np.random.RandomState(1).randn(1, 10, 12, 9).astype(np.float32)
    both = _predictor([0, 1]).predict_preprocessed(data)
    a = _predictor([0]).predict_preprocessed(data)
    b = _predictor([1]).predict_preprocessed(data)
    np.testing.assert_allclose(both, (a + b) / 2, atol=1e-6)
    np.testing.assert_allclose(both.sum(0), 1, atol=1e-5)


def test_imported_models_average_logits_and_resample_them_before_the_softmax():
    # nnU-Net v2's rule, which imported nnU-Net models follow
    data = np.random.RandomState(1).randn(1, 10, 12, 9).astype(np.float32)
    both = _predictor([0, 1], average_logits=True).predict_preprocessed(data)
    a = _predictor([0], average_logits=True).predict_preprocessed(data)
    b = _predictor([1], average_logits=True).predict_preprocessed(data)
    np.testing.assert_allclose(both, (a + b) / 2, atol=1e-5)
    assert not np.allclose(both.sum(0), 1, atol=1e-2)  # logits, not probabilities

    from sauronnet.inference.export import restore_probabilities, softmax
    from sauronnet.preprocessing.preprocess import preprocess_case
    from sauronnet.io import Geometry
    p = _predictor([0, 1], average_logits=True)
    raw = np.random.RandomState(3).normal(100, 20, (1, 8, 10, 12)).astype(np.float32)
    geo = Geometry((1.0, 1.0, 2.5), (0.0,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1), (8, 10, 12))
    pre, _, props = preprocess_case(raw, None, geo, "c", p.plans, p.config)
    logits = p.predict_preprocessed(pre)
    probs = restore_probabilities(logits, props, p.plans, p.config, logits=True)
    from_logits = restore_probabilities(logits, props, p.plans, p.config)  # resampled as they are
    np.testing.assert_allclose(probs, softmax(from_logits), atol=1e-6)  # softmax after resampling
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    pred = p.predict(raw, geo, return_probabilities=True)
    np.testing.assert_allclose(pred.probabilities, probs, atol=1e-6)
    np.testing.assert_array_equal(pred.labels, probs.argmax(0))


def test_probabilities_on_the_input_grid():
    data = np.random.RandomState(2).normal(100, 20, (1, 8, 10, 12)).astype(np.float32)
    from sauronnet.io import Geometry
    geo = Geometry((1.0, 1.0, 1.0), (0.0,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1), (8, 10, 12))
    pred = _predictor([0], mirror=True).predict(data, geo, return_probabilities=True)
    assert pred.probabilities.shape == (3, 8, 10, 12)
    np.testing.assert_array_equal(pred.probabilities.argmax(0), pred.labels)


def test_wrong_channel_count():
    from sauronnet.io import Geometry
    geo = Geometry((1.0, 1.0, 1.0), (0.0,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1), (4, 4, 4))
    with pytest.raises(ValueError, match="expects 1 channel"):
        _predictor([0]).predict(np.zeros((2, 4, 4, 4), np.float32), geo)


def test_postprocessing_keeps_one_component_per_chosen_label():
    from scipy import ndimage

    from sauronnet.io import Geometry
    data = np.random.RandomState(3).normal(100, 20, (1, 10, 14, 12)).astype(np.float32)
    geo = Geometry((1.0, 1.0, 1.0), (0.0,) * 3, (1, 0, 0, 0, 1, 0, 0, 0, 1), (10, 14, 12))
    p = _predictor([0])
    raw = p.predict(data, geo).labels
    components = {c: ndimage.label(raw == c, np.ones((3, 3, 3)))[1] for c in (1, 2)}
    assert max(components.values()) > 1  # the untrained network scatters its labels: something to remove
    p.keep_largest_component = (1, 2)
    labels = p.predict(data, geo).labels
    for c in (1, 2):
        assert ndimage.label(labels == c, np.ones((3, 3, 3)))[1] == min(components[c], 1)
        assert set(np.unique(labels[labels != raw])) <= {0}  # only removed, never relabelled


def test_bf16_runs_the_network_in_bfloat16_and_accumulates_in_float32():
    data = np.random.RandomState(3).normal(0, 1, (1, 9, 14, 11)).astype(np.float32)
    fp32, bf16 = _predictor([0]), _predictor([0], precision="bf16")
    seen = []
    bf16.networks[0].net.heads[-1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    a, b = fp32.predict_preprocessed(data), bf16.predict_preprocessed(data)
    assert seen and set(seen) == {torch.bfloat16}
    assert b.dtype == np.float32 and a.shape == b.shape
    assert np.allclose(b.sum(0), 1, atol=1e-5)  # softmax after the float32 accumulation
    assert 0 < np.abs(a - b).max() < 0.05


def test_unknown_predictor_precision_is_refused():
    with pytest.raises(ValueError, match="fp32 or bf16"):
        _predictor([0], precision="auto")


def _predictor_2d(tile_batch=None) -> tuple[Predictor, list[int]]:
    """A 2D predictor (8 x 8 patches) whose network is untrained and counts the tiles of each call."""
    from dataclasses import replace

    from sauronnet.plans import NetworkPlan
    plans = make_plans((1.0, 1.0, 1.0))
    net_plan = NetworkPlan((4, 8), ((3, 3), (3, 3)), ((1, 1), (2, 2)), (1, 1), (1,))
    cfg = replace(plans.configuration("3d_fullres"), spacing=(1.0, 1.0), patch_size=(8, 8), network=net_plan)
    plans = replace(plans, configurations={"2d": cfg})
    torch.manual_seed(0)
    runner = TorchNetwork(build_network(net_plan, 1, plans.num_classes, deep_supervision=False).eval())
    calls = []

    def counted(x):
        calls.append(len(x))
        return runner(x)

    return Predictor([counted], plans, "2d", mirror=True, tile_batch=tile_batch), calls


def test_2d_slices_share_network_calls_without_changing_the_probabilities():
    data = np.random.RandomState(4).randn(1, 6, 10, 9).astype(np.float32)
    one, one_calls = _predictor_2d(tile_batch=1)
    batched, calls = _predictor_2d()
    np.testing.assert_allclose(batched.predict_preprocessed(data), one.predict_preprocessed(data), atol=1e-5)
    assert set(one_calls) == {1} and sum(calls) == sum(one_calls) == 6 * 4 * 4  # slices x tiles x mirror passes
    assert max(calls) == 6 * 4  # 8 x 8 tiles: every tile of every slice in one call (up to 32), not one


def test_tile_batch_must_be_positive():
    with pytest.raises(ValueError, match="tile_batch"):
        _predictor_2d(tile_batch=0)


def test_workers_run_torch_calls_on_one_thread_each_and_change_nothing():
    import threading

    class Recording(TorchNetwork):
        def __call__(self, x):
            self.seen.append((threading.get_ident(), torch.get_num_threads()))
            return super().__call__(x)

    one = _predictor([0])
    net = Recording(one.networks[0].net)
    net.seen = []
    plans, cfg = one.plans, one.config
    data = np.random.RandomState(7).randn(1, *[2 * p for p in cfg.patch_size]).astype(np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = Predictor([net], plans, "3d_fullres", mirror=False, tile_batch=1, workers=2)
        np.testing.assert_allclose(two.predict_preprocessed(data), one.predict_preprocessed(data), atol=1e-6)
        assert torch.get_num_threads() == 2  # the caller's count is its own
    finally:
        torch.set_num_threads(threads)
    assert len({t for t, _ in net.seen}) == 2 and threading.get_ident() not in {t for t, _ in net.seen}
    assert {n for _, n in net.seen} == {1}
    with pytest.raises(ValueError, match="workers"):
        Predictor([net], plans, "3d_fullres", workers=0)


def test_torch_on_the_cpu_runs_as_many_tile_workers_as_threads_by_default():
    from sauronnet.inference.loading import default_workers, load_predictor
    assert default_workers("cpu", "torch") == torch.get_num_threads()
    assert default_workers("cpu", "onnxruntime") == default_workers("cuda", "torch") == 1
    with pytest.raises(ValueError, match="CPU threads"):
        load_predictor("no_such_model", device="cuda", workers=2)
