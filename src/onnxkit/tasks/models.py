"""The served models: the one owner of live model versions, with a typed getter per kind of model.

A model has a name and one or more versions; each version is a loaded, started ``ModelVersion``
(``tasks/loader``). A version that failed to load is kept as UNAVAILABLE with its reason, so it can
be listed and reported without taking the others down. Routes ask for what they serve (``chat``,
``embedder``, ``classifier``, ``answerer``, ``tensor``) and get that type or a 4xx naming what was
wrong; none of them inspects a model. A request that names no model (absent or ``""``) gets the one
model of the route's kind, or the one marked default (``--default-chat-model``,
``--default-embeddings-model``); where several qualify and none is marked, a 400 lists them.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from onnxkit.errors import InvalidRequest, ModelNotFound, ModelUnavailable, OnnxkitError
from onnxkit.models.config import ModelConfig
from onnxkit.models.folder import Task
from onnxkit.tasks.loader import ModelVersion

if TYPE_CHECKING:
    from onnxkit.tasks.chat import ChatModel
    from onnxkit.tasks.classify import Classifier
    from onnxkit.tasks.embeddings import Embedder
    from onnxkit.tasks.qa import QuestionAnswerer
    from onnxkit.tasks.tensor import TensorModel

CLASSIFY = (Task.TEXT_CLASSIFICATION, Task.ZERO_SHOT)
ROUTE_NAMES = {
    Task.CHAT: "/v1/chat/completions and /v1/completions",
    Task.EMBEDDINGS: "/v1/embeddings",
    Task.TEXT_CLASSIFICATION: "/v1/classify",
    Task.ZERO_SHOT: "/v1/classify (with candidate_labels)",
    Task.QUESTION_ANSWERING: "/v1/qa",
    Task.TENSOR: "KServe v2 / TF-Serving",
}


class State(str, enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass
class Version:
    version: str
    path: Path
    state: State = State.LOADING
    reason: str = ""
    handle: ModelVersion | None = None  # the started model once READY
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    def live(self) -> ModelVersion:
        """The handle of a READY version (the store hands out only READY versions)."""
        assert self.handle is not None, f"version {self.version} has no handle ({self.state.value})"
        return self.handle


@dataclass
class Model:
    name: str
    versions: dict[str, Version] = field(default_factory=dict)
    config: ModelConfig | None = None  # the repository's config, when it has one

    def ready_versions(self) -> list[Version]:
        return sorted((v for v in self.versions.values() if v.ready), key=lambda v: version_order(v.version))

    def latest(self) -> Version | None:
        """The newest READY version (what a request without a version gets); no sort, it runs per request."""
        best: Version | None = None
        for v in self.versions.values():
            if v.ready and (best is None or version_order(v.version) > version_order(best.version)):
                best = v
        return best

    @property
    def ready(self) -> bool:
        return any(v.ready for v in self.versions.values())

    @property
    def task(self) -> Task | None:
        """What the latest ready version serves (None while no version is ready)."""
        latest = self.latest()
        return latest.live().task if latest else None


def version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


Loader = Callable[[str, str, Path, "ModelConfig | None"], Awaitable[ModelVersion]]


class Models:
    def __init__(self, loader: Loader, defaults: Mapping[Task, str] | None = None) -> None:
        self._loader = loader
        self.defaults = dict(defaults or {})
        self._models: dict[str, Model] = {}
        self._lock = asyncio.Lock()

    def names(self) -> list[str]:
        return sorted(self._models)

    def models(self) -> list[Model]:
        return [self._models[n] for n in self.names()]

    def find(self, name: str) -> Model | None:
        return self._models.get(name)

    def model(self, name: str) -> Model:
        found = self._models.get(name)
        if found is None:
            known = ", ".join(self.names()) or "none"
            raise ModelNotFound(f"model {name!r} does not exist; served models: {known}", param="model")
        return found

    def get(self, name: str, version: str | None = None) -> Version:
        """The requested (or latest ready) version; raises 404/503 with the reason."""
        model = self.model(name)
        if version:
            found = model.versions.get(version)
            if found is None:
                have = ", ".join(sorted(model.versions, key=version_order)) or "none"
                raise ModelNotFound(f"model {name!r} has no version {version!r}; versions: {have}")
            if not found.ready:
                raise ModelUnavailable(
                    f"model {name!r} version {version} is {found.state.value}: {found.reason or 'not ready'}"
                )
            return found
        latest = model.latest()
        if latest is None:
            reasons = "; ".join(f"v{v.version}: {v.reason}" for v in model.versions.values() if v.reason)
            raise ModelUnavailable(f"model {name!r} is not ready" + (f" ({reasons})" if reasons else ""))
        return latest

    def handle(self, name: str, version: str | None = None) -> ModelVersion:
        return self.get(name, version).live()

    async def load(self, name: str, version: str, path: Path, config: ModelConfig | None = None) -> Version:
        """Load one version. A failure marks it UNAVAILABLE; a serving version stays in place."""
        async with self._lock:
            model = self._models.setdefault(name, Model(name))
            if config is not None:
                model.config = config
            previous = model.versions.get(version)
        entry: Version = Version(version=version, path=path)
        try:
            handle = await self._loader(name, version, path, model.config)
            await handle.start()
        except Exception as exc:
            reason = exc.message if isinstance(exc, OnnxkitError) else f"{type(exc).__name__}: {exc}"
            return await self._failed(model, entry, previous, reason)
        entry.handle, entry.state = handle, State.READY
        async with self._lock:
            model.versions[version] = entry
        if previous is not None and previous.handle is not None:
            await previous.handle.close()
        return entry

    async def mark_unavailable(self, name: str, version: str, path: Path, reason: str) -> Version:
        """Record a version that cannot load (e.g. its config is wrong) without trying; a serving one stays."""
        async with self._lock:
            model = self._models.setdefault(name, Model(name))
            previous = model.versions.get(version)
        return await self._failed(model, Version(version=version, path=path), previous, reason)

    async def _failed(self, model: Model, entry: Version, previous: Version | None, reason: str) -> Version:
        if previous is not None and previous.ready:
            previous.reason = f"reload failed, still serving the previous load: {reason}"
            return previous
        entry.state, entry.reason = State.UNAVAILABLE, reason
        async with self._lock:
            model.versions[entry.version] = entry
        return entry

    async def unload(self, name: str, version: str | None = None) -> None:
        model = self.model(name)
        targets = [model.versions[version]] if version else list(model.versions.values())
        for v in targets:
            v.state = State.UNLOADING
            if v.handle is not None:
                await v.handle.close()
                v.handle = None
            model.versions.pop(v.version, None)
        if not model.versions:
            self._models.pop(name, None)

    async def close(self) -> None:
        for name in self.names():
            await self.unload(name)

    # -- which model a request means --------------------------------------------------------------------
    def default_name(self, tasks: Sequence[Task]) -> str | None:
        """The model a request without one means for these tasks, or None where that is not decided."""
        for task in tasks:
            marked = self.defaults.get(task)
            if marked and self.find(marked) is not None:
                return marked
        candidates = self.names_for(tasks)
        return candidates[0] if len(candidates) == 1 else None

    def names_for(self, tasks: Sequence[Task]) -> list[str]:
        return [m.name for m in self.models() if _task(m) in tasks]

    def pick(self, name: str | None, tasks: Sequence[Task]) -> ModelVersion:
        """The serving version of ``name``, or of the route's default model; 400 when it serves another task."""
        if not name:
            name = self.default_name(tasks)
            if name is None:
                what = " or ".join(t.value for t in tasks)
                candidates = self.names_for(tasks)
                if not candidates:
                    raise InvalidRequest(f"no {what} model is served; load one with `onnxkit serve MODEL`",
                                         param="model")  # fmt: skip
                flag = {Task.CHAT: "--default-chat-model", Task.EMBEDDINGS: "--default-embeddings-model"}.get(tasks[0])
                hint = f", or start the server with {flag} NAME" if flag else ""
                raise InvalidRequest(
                    f"model is not set and {len(candidates)} {what} models are served: {', '.join(candidates)}; "
                    f"name one in \"model\"{hint}",
                    param="model",
                )
        loaded = self.handle(name)
        if loaded.task not in tasks:
            raise InvalidRequest(
                f"model {name!r} serves task {loaded.task.value!r} ({ROUTE_NAMES[loaded.task]}); this route "
                f"needs a {' or '.join(t.value for t in tasks)} model",
                param="model",
            )
        return loaded

    # -- typed getters ---------------------------------------------------------------------------------
    def chat(self, name: str | None) -> ChatModel:
        found = self.pick(name, [Task.CHAT]).chat
        assert found is not None
        return found

    def embedder(self, name: str | None) -> Embedder:
        found = self.pick(name, [Task.EMBEDDINGS]).embedder
        assert found is not None
        return found

    def classifier(self, name: str | None, tasks: Sequence[Task] = CLASSIFY) -> Classifier:
        found = self.pick(name, tasks).classifier
        assert found is not None
        return found

    def answerer(self, name: str | None) -> QuestionAnswerer:
        found = self.pick(name, [Task.QUESTION_ANSWERING]).answerer
        assert found is not None
        return found

    def tensor(self, name: str, version: str | None = None) -> TensorModel:
        """The graph of any ONNX model (tensor or text task) for KServe v2 / TF-Serving; 400 for chat models."""
        loaded = self.get(name, version).live()
        if loaded.tensor is None:
            raise InvalidRequest(
                f"model {name!r} is a {loaded.task.value} model; KServe and TF-Serving inference serve ONNX "
                f"graphs. Use {ROUTE_NAMES[loaded.task]} for it"
            )
        return loaded.tensor


def _task(model: Model) -> Task | None:
    return model.task
