"""The onnxruntime network: calls from sliding-window workers share a one-thread session, the caller keeps its own."""
import threading

import numpy as np
import pytest
import torch

from sauronnet.deploy.export import export_onnx
from sauronnet.deploy.runtime import OnnxNetwork
from sauronnet.inference.predictor import Predictor
from sauronnet.networks.unet import build_network
from tests.unit.preprocessing.test_preprocess import make_plans

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny():
    plans = make_plans((1.0, 1.0, 1.0), transpose=(2, 0, 1))
    cfg = plans.configuration("3d_fullres")
    torch.manual_seed(0)
    net = build_network(cfg.network, 1, plans.num_classes, deep_supervision=False).eval()
    graph, _ = export_onnx(net, cfg.patch_size)
    return plans, cfg, graph


def test_workers_call_a_one_thread_session_and_the_caller_its_own(tiny):
    plans, cfg, graph = tiny
    net = OnnxNetwork(graph, threads=2)
    x = np.random.RandomState(0).randn(2, 1, *cfg.patch_size).astype(np.float32)
    here = net(x)
    assert net.session_here() is net.session and net.session.get_session_options().intra_op_num_threads == 2
    seen = {}

    def worker():
        net.worker_init()
        seen["session"] = net.session_here()
        seen["out"] = net(x)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["session"] is not net.session
    assert seen["session"].get_session_options().intra_op_num_threads == 1
    np.testing.assert_allclose(seen["out"], here, atol=1e-5)
    assert net.session_here() is net.session  # the caller's thread is untouched


def test_a_predictor_on_onnxruntime_gives_the_same_probabilities_with_workers(tiny):
    plans, cfg, graph = tiny
    data = np.random.RandomState(1).randn(1, *[2 * p for p in cfg.patch_size]).astype(np.float32)
    one = Predictor([OnnxNetwork(graph, 2)], plans, "3d_fullres", mirror=False, tile_batch=1)
    two = Predictor([OnnxNetwork(graph, 2)], plans, "3d_fullres", mirror=False, tile_batch=1, workers=2)
    np.testing.assert_allclose(two.predict_preprocessed(data), one.predict_preprocessed(data), atol=1e-5)
    assert two.networks[0]._single is not None  # the workers ran (27 calls > 2 workers)
