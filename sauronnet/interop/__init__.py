"""Interoperability with other tools: importing trained nnU-Net v2 models."""
