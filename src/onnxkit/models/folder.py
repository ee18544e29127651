"""What a model folder is: the one rule that both the cache (``onnxkit models``) and the server use.

- ``genai_config.json``             → chat (onnxruntime-genai)
- ``onnxkit.json`` card             → its task (pooling → embeddings, classification, QA…). A fused
  tokenizer (the graph takes strings) keeps an embedding export an embeddings model (the
  ``Embedder`` feeds it text; KServe v2 / TF-Serving still take the strings as BYTES) and makes
  any other task a tensor model (KServe v2 / TF-Serving only)
- ``model.onnx`` / a ``.onnx`` file → tensor (KServe / TF-Serving only)
"""

from __future__ import annotations

import enum
from pathlib import Path

from onnxkit.errors import SupplyError
from onnxkit.export.card import read_card

EMBEDDING_TASKS = {"pooling", "embeddings"}


class Task(str, enum.Enum):
    """What the server does with a model (a ``str``, so it prints, compares and serialises as its value)."""

    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    TEXT_CLASSIFICATION = "text-classification"
    ZERO_SHOT = "zero-shot-classification"
    QUESTION_ANSWERING = "question-answering"
    TENSOR = "tensor"

    def __str__(self) -> str:
        return self.value


def model_kind(path: Path) -> Task:
    """The task a folder or file will be served as."""
    if path.is_file():
        return Task.TENSOR
    if (path / "genai_config.json").is_file():
        return Task.CHAT
    card = read_card(path)
    task = str(card.get("task", ""))
    if task in EMBEDDING_TASKS:
        return Task.EMBEDDINGS  # fused or not: the Embedder feeds a fused graph text
    if card.get("fused_tokenizer"):
        return Task.TENSOR  # it takes strings: served over KServe v2 / TF-Serving as BYTES
    if task:
        try:
            return Task(task)
        except ValueError:
            # an export of a task the server has no route for (token-classification, default…):
            # its graph is still served over KServe v2 / TF-Serving
            return Task.TENSOR
    if (path / "model.onnx").is_file():
        return Task.TENSOR
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
