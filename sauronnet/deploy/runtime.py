"""The onnxruntime backend: an exported fold's ONNX graph as a sliding-window network. No torch."""
from __future__ import annotations

import numpy as np


class OnnxNetwork:
    """Runs an ONNX graph (``image`` (B, C, *patch) → ``logits``) with onnxruntime on the CPU.

    Args:
        graph: the serialised ONNX model.
        threads: intra-op threads (default: onnxruntime's, one per physical core).
    """

    name = "onnxruntime"

    def __init__(self, graph: bytes, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ValueError("--backend onnxruntime needs onnxruntime: pip install 'sauronnet[deploy]'") from e
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0]
