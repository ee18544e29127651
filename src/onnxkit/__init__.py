"""onnxkit: export, check, optimise and serve ONNX models."""

from __future__ import annotations

__version__ = "0.1.0"
