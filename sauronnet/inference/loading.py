"""A :class:`Predictor` from what users hand over: a training folder or a ``.sauron`` bundle, in torch or in
onnxruntime.

=================  ===========================================  =============================================
model              ``backend="torch"``                          ``backend="onnxruntime"``
=================  ===========================================  =============================================
training folder    every fold's checkpoint, pruned widths        refused: export a bundle with ``--onnx``
``.sauron`` file   networks rebuilt from widths + safetensors    the bundle's ONNX graphs; torch never imported
=================  ===========================================  =============================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sauronnet.deploy.bundle import SUFFIX, read_bundle
from sauronnet.inference.postprocessing import agreed_keep_largest
from sauronnet.inference.predictor import CHECKPOINTS, Predictor

BACKENDS = ("torch", "onnxruntime")


def is_bundle(model: Path) -> bool:
    return model.suffix == SUFFIX or model.is_file()


def load_predictor(model: Path, folds: Sequence[str] | None = None, checkpoint: str = "final", step: float = 0.5,
                   mirror: bool = True, device: str = "cpu", postprocess: bool = True, precision: str = "fp32",
                   backend: str = "torch", threads: int | None = None, workers: int | None = None) -> Predictor:
    """Loads every requested fold of ``model`` for prediction.

    ``threads``: onnxruntime's intra-op threads (torch's are the process's); ``workers``: network calls run side by
    side, each on one thread (:class:`Predictor`; default: :func:`default_workers`).

    With ``postprocess``, keep-largest-component applies to the labels every fold's validation chose. Imported
    nnU-Net models keep their allowed mirror axes and nnU-Net's export rule (folds averaged as logits).

    Raises:
        FileNotFoundError, ValueError: with the path and what to do.
    """
    model = Path(model)
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if workers is None:
        workers = default_workers(device, backend)
    elif workers > 1 and str(device) != "cpu":
        raise ValueError(f"{workers} tile workers run network calls side by side on CPU threads; on {device} use 1")
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    if is_bundle(model):
        return _from_bundle(model, folds, step, mirror, device, postprocess, precision, backend, threads, workers)
    if backend == "onnxruntime":
        raise ValueError(f"{model}: onnxruntime predicts from a bundle; export one first: sauron_export {model} -o "
                         f"{model.name}{SUFFIX} --onnx")
    from sauronnet.inference.torch_network import TorchNetwork, load_model_dir, model_dir_folds

    folds = model_dir_folds(model, folds, checkpoint)
    nets, plans, configuration, ckpts = load_model_dir(model, folds, checkpoint, device)
    keep = agreed_keep_largest(model, folds) if postprocess else []
    return Predictor([TorchNetwork(n, device, precision) for n in nets], plans, configuration, step, mirror,
                     keep, ckpts[0].get("mirror_axes"), ckpts[0].get("score_space") == "logits", workers=workers)


def default_workers(device: str, backend: str) -> int:
    """Tile workers by default: torch on the CPU runs as many calls side by side as it has threads (measured 1.0-1.4x
    faster than all threads inside each call on volumes of many calls, README "Speed on the CPU"; volumes of few
    calls run inline anyway). One on CUDA, and for onnxruntime, where workers ran toy64's 2D models 0.92x and 1.08x
    as fast: no consistent gain."""
    if str(device) != "cpu" or backend != "torch":
        return 1
    import torch
    return torch.get_num_threads()


def _from_bundle(path: Path, folds, step, mirror, device, postprocess, precision, backend, threads, workers
                 ) -> Predictor:
    bundle = read_bundle(path, folds, need_onnx=backend == "onnxruntime")
    if backend == "onnxruntime":
        from sauronnet.deploy.runtime import OnnxNetwork
        networks = [OnnxNetwork(f.onnx, threads) for f in bundle.folds]
    else:
        import torch

        from sauronnet.inference.torch_network import TorchNetwork
        from sauronnet.networks.unet import build_network

        networks = []
        cfg = bundle.plans.configuration(bundle.configuration)
        for f in bundle.folds:
            net = build_network(cfg.network, len(bundle.plans.channel_names), bundle.plans.num_classes, f.widths,
                                deep_supervision=False)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in f.weights.items()})
            networks.append(TorchNetwork(net, device, precision))
    keep = bundle.keep_largest_component if postprocess else ()
    return Predictor(networks, bundle.plans, bundle.configuration, step, mirror, keep, bundle.mirror_axes,
                     bundle.score_space == "logits", workers=workers)
