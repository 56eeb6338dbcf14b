"""The onnxruntime backend: an exported fold's ONNX graph as a sliding-window network. No torch."""
from __future__ import annotations

import threading

import numpy as np


class OnnxNetwork:
    """Runs an ONNX graph (``image`` (B, C, *patch) → ``logits``) with onnxruntime on the CPU.

    Calls from the caller's thread use one session with ``threads`` intra-op threads; calls from a sliding window's
    worker threads (after :meth:`worker_init`) share a second, one-thread session, so that calls side by side do not
    each spin up ``threads`` threads. The second session holds another copy of the weights.

    Args:
        graph: the serialised ONNX model.
        threads: intra-op threads of the caller's session (default: onnxruntime's, one per physical core).
    """

    name = "onnxruntime"

    def __init__(self, graph: bytes, threads: int | None = None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ValueError("--backend onnxruntime needs onnxruntime: pip install 'sauronnet[deploy]'") from e
        self.graph = graph
        self.session = self._session(threads)
        self.input = self.session.get_inputs()[0].name
        self._single = None
        self._lock = threading.Lock()
        self._local = threading.local()

    def _session(self, threads: int | None):
        import onnxruntime as ort
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        return ort.InferenceSession(self.graph, options, providers=["CPUExecutionProvider"])

    def worker_init(self) -> None:
        """Run first in each worker thread of a sliding window: its calls go to the one-thread session."""
        with self._lock:
            if self._single is None:
                self._single = self._session(1)
        self._local.worker = True

    def session_here(self):
        """The session that calls from this thread use."""
        return self._single if getattr(self._local, "worker", False) else self.session

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session_here().run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0]
