"""Mitosis analysis for H&E histopathology: MIDOG Track 1 (detection) and Track 2 (atypical
classification), ONNX Runtime inference on GPU or CPU."""

__version__ = "0.1.0"
