"""Preprocessing: transpose, crop to nonzero, normalise, resample (nnU-Net v2's DefaultPreprocessor rules)."""
