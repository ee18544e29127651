"""The ASGI application: routers from each transport over one AppState."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from onnxkit import __version__
from onnxkit.errors import InternalError, InvalidRequest, ModelNotFound, OnnxkitError
from onnxkit.runtime.store import ModelStore, Servable
from onnxkit.serve.access_log import AccessLog
from onnxkit.serve.errors import describe_validation, error_body
from onnxkit.serve.middleware import Guard
from onnxkit.serve.state import AppState
from onnxkit.settings import ServerSettings
from onnxkit.tasks import loader


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    version: str = "1"
    meta: dict[str, Any] = field(default_factory=dict)


def make_store(settings: ServerSettings, metas: dict[str, dict[str, Any]] | None = None) -> ModelStore:
    async def load(name: str, version: str, path: Path) -> Servable:
        # The store holds the meta its load() was given (repository configs); the task needs the version.
        found = store.find(name)
        meta = {**(metas or {}).get(name, {}), **(found.meta if found else {}), "version": version}
        return await asyncio.to_thread(loader.load, name, path, settings, meta, version)

    store = ModelStore(load)
    return store


def make_services(settings: ServerSettings) -> list[Any]:
    """Model repository and gRPC server: each has ``async start(state)`` and ``async stop()``."""
    services: list[Any] = []
    if settings.repositories or settings.model_config_files:
        from onnxkit.models.repository import Repository, options_from

        services.append(Repository(options_from(settings)))
    if settings.grpc_port is not None:
        from onnxkit.serve.kserve_grpc import GrpcServer

        services.append(GrpcServer(settings.host, settings.grpc_port))
    return services


def create_app(settings: ServerSettings, models: Sequence[ModelSpec]) -> FastAPI:
    metas = {m.name: m.meta for m in models}
    state = AppState(settings=settings, store=make_store(settings, metas))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.gather(*(state.store.load(m.name, m.version, m.path, m.meta) for m in models))
        services = make_services(settings)
        for service in services:
            await service.start(state)
        state.started = True
        try:
            yield
        finally:
            for service in reversed(services):
                await service.stop()
            await state.store.close()

    app = FastAPI(
        title="onnxkit",
        version=__version__,
        description="OpenAI-compatible, KServe v2 and TF-Serving APIs on onnxruntime.",
        lifespan=lifespan,
    )
    app.state.onnxkit = state

    @app.exception_handler(OnnxkitError)
    async def onnxkit_error(request: Request, exc: OnnxkitError) -> Response:
        return JSONResponse(error_body(request.url.path, exc), status_code=int(exc.status))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        message, param = describe_validation(list(exc.errors()))
        err = InvalidRequest(message, param=param)
        return JSONResponse(error_body(request.url.path, err), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err: OnnxkitError
        if exc.status_code == 404:
            err = ModelNotFound(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = InvalidRequest(f"method {request.method} is not allowed on {request.url.path}")
        else:
            err = InvalidRequest(str(exc.detail))
        err.status = exc.status_code  # type: ignore[assignment]
        return JSONResponse(error_body(request.url.path, err), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # Never a traceback in the response; the log has it.
        err = InternalError(f"internal error ({type(exc).__name__}); see the server log")
        return JSONResponse(error_body(request.url.path, err), status_code=500)

    @app.get("/health", tags=["health"])
    async def health() -> Response:
        # The models named at start-up must be ready; repository models report their own state.
        named = [state.store.find(m.name) for m in models]
        ready = state.started and all(m is not None and m.ready for m in named)
        failed = {
            m.name: "; ".join(v.reason for v in m.versions.values() if v.reason) or "not ready"
            for m in named
            if state.started and m is not None and not m.ready
        }
        status = "ok" if ready else ("unavailable" if failed else "loading")
        body = {"status": status, "server": "onnxkit", "version": __version__, "pid": os.getpid(),
                **({"unavailable": failed} if failed else {})}
        return JSONResponse(body, status_code=200 if ready else 503)

    from onnxkit.serve import openai_http

    # TF-Serving's /v1/models/{m}/versions/{v} and .../metadata come before OpenAI's
    # /v1/models/{model_id:path}, which would otherwise swallow them.
    for module in ("kserve_http", "tfserving_http", "metrics"):
        _include_optional(app, module)
    app.include_router(openai_http.router)
    _include_optional(app, "tasks_http")  # /v1/classify, /v1/qa (docs/tasks.md)
    return app


def _include_optional(app: FastAPI, module: str) -> None:
    import importlib

    try:
        mod = importlib.import_module(f"onnxkit.serve.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"onnxkit.serve.{module}":
            return
        raise
    app.include_router(mod.router)


def wrap(app: FastAPI, settings: ServerSettings) -> Guard | AccessLog:
    from onnxkit.serve.kserve_http import FastInfer

    guarded = Guard(FastInfer(app), api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    # Outermost, so rejected requests (401, 413) are logged too.
    return AccessLog(guarded, json_lines=settings.log_json) if settings.access_log else guarded
