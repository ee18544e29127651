"""ModelStore: the one owner of live models.

A model has a name and one or more versions; each version is a loaded, started
``Servable`` (a task object: chat, embeddings, tensor…). A model that failed to
load is kept as UNAVAILABLE with its reason, so it can be listed and reported
without taking the others down.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from onnxkit.errors import ModelNotFound, ModelUnavailable


class Servable(Protocol):
    task: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...


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
    handle: Any = None  # the started Servable once READY
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def ready(self) -> bool:
        return self.state is State.READY


@dataclass
class Model:
    name: str
    versions: dict[str, Version] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # config (platform, labels, batching…)

    def ready_versions(self) -> list[Version]:
        return sorted((v for v in self.versions.values() if v.ready), key=lambda v: _order(v.version))

    @property
    def ready(self) -> bool:
        return bool(self.ready_versions())

    @property
    def task(self) -> str:
        live = self.ready_versions()
        return str(getattr(live[-1].handle, "task", "")) if live else str(self.meta.get("task", ""))


def _order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


Loader = Callable[[str, str, Path], Awaitable[Servable]]


class ModelStore:
    def __init__(self, loader: Loader) -> None:
        self._loader = loader
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
                have = ", ".join(sorted(model.versions, key=_order)) or "none"
                raise ModelNotFound(f"model {name!r} has no version {version!r}; versions: {have}")
            if not found.ready:
                raise ModelUnavailable(
                    f"model {name!r} version {version} is {found.state.value}: {found.reason or 'not ready'}"
                )
            return found
        live = model.ready_versions()
        if not live:
            reasons = "; ".join(f"v{v.version}: {v.reason}" for v in model.versions.values() if v.reason)
            raise ModelUnavailable(f"model {name!r} is not ready" + (f" ({reasons})" if reasons else ""))
        return live[-1]

    def handle(self, name: str, version: str | None = None) -> Any:
        return self.get(name, version).handle

    @property
    def ready(self) -> bool:
        """Every model that was asked for has at least one ready version."""
        return all(m.ready for m in self._models.values())

    async def load(self, name: str, version: str, path: Path, meta: dict[str, Any] | None = None) -> Version:
        """Load one version. A failure marks it UNAVAILABLE; a serving version stays in place."""
        async with self._lock:
            model = self._models.setdefault(name, Model(name))
            if meta:
                model.meta.update(meta)
            previous = model.versions.get(version)
        entry = Version(version=version, path=path)
        try:
            servable = await self._loader(name, version, path)
            await servable.start()
        except Exception as exc:
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            if previous is not None and previous.ready:
                previous.reason = f"reload failed, still serving the previous load: {reason}"
                return previous
            entry.state, entry.reason = State.UNAVAILABLE, reason
            async with self._lock:
                model.versions[version] = entry
            return entry
        entry.handle, entry.state = servable, State.READY
        async with self._lock:
            model.versions[version] = entry
        if previous is not None and previous.handle is not None:
            await previous.handle.close()
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
