"""A model folder → one typed, started-on-demand ``ModelVersion``: the only importer of the task modules.

The kind of folder (``models.folder.model_kind``) decides what the version serves. An ONNX graph is
opened once: its ``TensorModel`` (KServe v2 / TF-Serving) and its text model (embeddings,
classification, question answering), where it has one, share that session and one recorder, so both
protocols count the same traffic. A chat model is an onnxruntime-genai folder and has no tensor side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onnxkit.models.config import ModelConfig
from onnxkit.models.folder import Task, model_kind, onnx_file
from onnxkit.runtime.metrics import Recorder
from onnxkit.settings import ServerSettings

if TYPE_CHECKING:
    from onnxkit.tasks.chat import ChatModel
    from onnxkit.tasks.classify import Classifier
    from onnxkit.tasks.embeddings import Embedder
    from onnxkit.tasks.qa import QuestionAnswerer
    from onnxkit.tasks.tensor import TensorModel


@dataclass
class ModelVersion:
    """What one loaded version serves: exactly the parts its task has, typed."""

    name: str
    version: str
    path: Path
    task: Task
    recorder: Recorder
    tensor: TensorModel | None = None
    chat: ChatModel | None = None
    embedder: Embedder | None = None
    classifier: Classifier | None = None
    answerer: QuestionAnswerer | None = None

    def _parts(self) -> list[ChatModel | Embedder | Classifier | QuestionAnswerer | TensorModel]:
        return [p for p in (self.chat, self.embedder, self.classifier, self.answerer, self.tensor) if p is not None]

    async def start(self) -> None:
        for part in self._parts():
            await part.start()

    async def close(self) -> None:
        for part in self._parts():
            await part.close()


def load(
    name: str, version: str, path: Path, config: ModelConfig | None, settings: ServerSettings, recorder: Recorder
) -> ModelVersion:
    """Open ``path`` as ``name``/``version`` (blocking: the store calls it in a worker thread)."""
    task = model_kind(path)
    loaded = ModelVersion(name, version, path, task, recorder)
    if task is Task.CHAT:
        from onnxkit.tasks.chat import ChatModel

        loaded.chat = ChatModel(name, version, path, settings, recorder)
        return loaded

    from onnxkit.runtime.ort import OrtSession
    from onnxkit.tasks.tensor import TensorModel

    cfg = config or ModelConfig(name=name)
    session = OrtSession(
        onnx_file(path), threads=cfg.threads or settings.threads, providers=cfg.execution_providers or None
    )
    loaded.tensor = TensorModel(name, version, session, cfg, settings, recorder)
    if task is Task.EMBEDDINGS:
        from onnxkit.tasks.embeddings import Embedder

        loaded.embedder = Embedder(name, version, path, session, settings, recorder)
    elif task in (Task.TEXT_CLASSIFICATION, Task.ZERO_SHOT):
        from onnxkit.tasks.classify import Classifier

        loaded.classifier = Classifier(name, version, path, session, settings, recorder)
    elif task is Task.QUESTION_ANSWERING:
        from onnxkit.tasks.qa import QuestionAnswerer

        loaded.answerer = QuestionAnswerer(name, version, path, session, settings, recorder)
    return loaded
