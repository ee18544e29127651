"""What a model folder is: the one rule that both the cache (``onnxkit models``) and the server use.

- ``genai_config.json``             → chat (onnxruntime-genai)
- ``onnxkit.json`` card             → its task (pooling → embeddings, classification, QA…). A fused
  tokenizer (the graph takes strings) keeps an embedding export an embeddings model (the
  ``Embedder`` feeds it text; KServe v2 / TF-Serving still take the strings as BYTES) and makes
  any other task a tensor model (KServe v2 / TF-Serving only)
- ``model.onnx`` / a ``.onnx`` file → tensor (KServe / TF-Serving only)
"""

from __future__ import annotations

from pathlib import Path

from onnxkit.errors import SupplyError
from onnxkit.export.card import read_card

EMBEDDING_TASKS = {"pooling", "embeddings"}


def model_kind(path: Path) -> str:
    """The task a folder or file will be served as."""
    if path.is_file():
        return "tensor"
    if (path / "genai_config.json").is_file():
        return "chat"
    card = read_card(path)
    task = str(card.get("task", ""))
    if task in EMBEDDING_TASKS:
        return "embeddings"  # fused or not: the Embedder feeds a fused graph text
    if card.get("fused_tokenizer"):
        return "tensor"  # it takes strings: served over KServe v2 / TF-Serving as BYTES
    if task:
        return task
    if (path / "model.onnx").is_file():
        return "tensor"
    raise SupplyError(f"{path} is not a model folder: expected genai_config.json, onnxkit.json or model.onnx")


def onnx_file(path: Path) -> Path:
    if path.is_file():
        return path
    candidate = path / "model.onnx"
    if candidate.is_file():
        return candidate
    found = sorted(path.glob("*.onnx"))
    if len(found) == 1:
        return found[0]
    raise SupplyError(f"{path} holds {len(found)} .onnx files; expected model.onnx")
