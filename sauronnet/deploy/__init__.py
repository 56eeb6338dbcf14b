"""Deployment: the one-file ``.sauron`` bundle, ONNX export, and the onnxruntime backend (no torch)."""
