"""``sauron_export``: a training (or imported) model folder → one ``.sauron`` bundle, optionally with ONNX graphs.

ONNX export uses torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, opset 18, which needs
``onnxscript``): the TorchScript exporter cannot trace the conv block's group norm with a traced group count, and the
dynamo path is the one torch maintains. Each graph is exported with deep supervision off and a dynamic batch axis at
the plans' patch size (the sliding window stays in Python), checked with ``onnx.checker`` and run once in
onnxruntime against the torch network on random input; a difference above :data:`ONNX_TOLERANCE` refuses the
export.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sauronnet.deploy.bundle import Bundle, BundleFold, write_bundle
from sauronnet.inference.postprocessing import agreed_keep_largest
from sauronnet.inference.torch_network import load_model_dir, model_dir_folds
from sauronnet.networks.unet import UNet

logger = logging.getLogger(__name__)

#: largest |ONNX − torch| logit accepted at export, on standard-normal input
ONNX_TOLERANCE = 1e-3
ONNX_OPSET = 18


def export_onnx(net: UNet, patch_size: Sequence[int], seed: int = 0) -> tuple[bytes, float]:
    """The network as a checked ONNX graph, and its max abs logit difference to torch on random input.

    Raises:
        ValueError: if the graph's logits differ from torch's by more than :data:`ONNX_TOLERANCE`.
    """
    import onnx
    import onnxruntime as ort

    net = net.cpu().eval()
    net.deep_supervision = False
    x = torch.randn(1, net.in_channels, *patch_size, generator=torch.Generator().manual_seed(seed))
    program = torch.onnx.export(net, (x,), None, input_names=["image"], output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                                opset_version=ONNX_OPSET, dynamo=True, verbose=False)
    model = program.model_proto
    onnx.checker.check_model(model)
    graph = model.SerializeToString()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    probe = torch.randn(2, net.in_channels, *patch_size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        ref = net(probe).numpy()
    diff = float(np.abs(session.run(None, {"image": probe.numpy()})[0] - ref).max())
    if not diff <= ONNX_TOLERANCE:
        raise ValueError(f"the ONNX graph's logits differ from torch's by {diff:.3g} (> {ONNX_TOLERANCE}); not exported")
    return graph, diff


def export_model(model_dir: Path, out: Path, folds: Sequence[str] | None = None, checkpoint: str = "final",
                 onnx: bool = False, created_by: str = "sauronnet") -> dict:
    """Writes ``out`` (a ``.sauron`` bundle) from ``model_dir``; returns a report (folds, sizes, ONNX differences).

    The postprocessing kept is the one every exported fold chose (as ``sauron_predict`` does); imported nnU-Net
    models keep their mirror axes and logit averaging.
    """
    folds = model_dir_folds(model_dir, folds, checkpoint)
    nets, plans, configuration, ckpts = load_model_dir(model_dir, folds, checkpoint, "cpu")
    keep = agreed_keep_largest(model_dir, folds)
    patch = plans.configuration(configuration).patch_size
    entries, diffs = [], {}
    for f, net, ckpt in zip(folds, nets, ckpts):
        graph = None
        if onnx:
            logger.info("fold %s: exporting ONNX (dynamo exporter, opset %d)", f, ONNX_OPSET)
            graph, diffs[f] = export_onnx(net, patch)
        weights = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        entries.append(BundleFold(f, ckpt["trainer"], dict(ckpt["widths"]), weights, graph))
    mirror = ckpts[0].get("mirror_axes")
    bundle = Bundle(plans, configuration, tuple(entries), tuple(keep),
                    None if mirror is None else tuple(mirror),
                    "logits" if ckpts[0].get("score_space") == "logits" else "probabilities", checkpoint)
    size = write_bundle(out, bundle, created_by)
    tensors = sum(a.nbytes for e in entries for a in e.weights.values()) + sum(len(e.onnx or b"") for e in entries)
    return {"folds": folds, "bytes": size, "tensor_bytes": tensors, "onnx_max_abs_diff": diffs}
