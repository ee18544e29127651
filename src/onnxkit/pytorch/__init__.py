"""ONNX -> PyTorch: import a graph as a trainable module, fine-tune it, write the weights back.

torch is an optional dependency (``pip install 'onnxkit[torch]'``); nothing outside this package
imports it.
"""

from __future__ import annotations

from onnxkit.pytorch.graph import UnsupportedOp
from onnxkit.pytorch.module import OnnxModule, load
from onnxkit.pytorch.writeback import WeightMismatch, save

__all__ = ["OnnxModule", "UnsupportedOp", "WeightMismatch", "load", "save"]
