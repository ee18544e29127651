"""Folder → started task object, by ``models.folder.model_kind`` (the one rule for what a folder is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxkit.export.card import CARD, read_card
from onnxkit.models.folder import model_kind, onnx_file
from onnxkit.runtime.store import Servable
from onnxkit.settings import ServerSettings


def load(
    name: str, path: Path, settings: ServerSettings, meta: dict[str, Any] | None = None, version: str = "1"
) -> Servable:
    kind = model_kind(path)
    if kind == "chat":
        from onnxkit.tasks.chat import ChatModel

        return ChatModel(name, path, settings, version)
    if kind == "embeddings":
        from onnxkit.tasks.embeddings import Embedder

        return Embedder(name, path, settings, version)
    if kind in ("text-classification", "zero-shot-classification", "question-answering"):
        from onnxkit.tasks.classify import load_task

        return load_task(kind, name, path, settings, meta or {}, version)
    from onnxkit.tasks.tensor import TensorModel

    return TensorModel(name, path, settings, meta or {})


__all__ = ["CARD", "load", "model_kind", "onnx_file", "read_card"]
