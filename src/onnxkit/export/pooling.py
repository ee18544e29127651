"""Sentence-embedding graphs: one L2-normalised vector per input (mean pooling unless told cls)."""

from __future__ import annotations

from pathlib import Path

from onnxkit.export.api import export
from onnxkit.export.module import DEFAULT_OPSET


def export_pooling(
    hf_dir: Path,
    out_dir: Path,
    *,
    pooling: str | None = None,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
) -> Path:
    """``hf_dir`` (e.g. sentence-transformers all-MiniLM-L6-v2) → model.onnx + tokenizer + card."""
    return export(hf_dir, "pooling", out_dir, pooling=pooling, opset=opset, atol=atol)
