"""The ASGI application: an explicit list of routers over one ``AppState``.

``create_app`` builds the state once (metrics, the typed model store, the data plane) and the
FastAPI app whose lifespan loads the models and starts the services (model control, gRPC).
``wrap`` puts the pure-ASGI layers in front: the access log, the guard (API key, body limit), the
one disconnect rule, and the KServe infer path. What ``onnxkit serve`` runs is ``wrap(create_app())``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from onnxkit import __version__
from onnxkit.errors import InternalError, InvalidRequest, ModelNotFound, OnnxkitError
from onnxkit.models.config import ModelConfig
from onnxkit.models.folder import Task
from onnxkit.runtime.metrics import Metrics
from onnxkit.serve import kserve_http, metrics_http, openai_http, tasks_http, text_http, tfserving_http, ui_http
from onnxkit.serve.access_log import AccessLog
from onnxkit.serve.errors import describe_validation, error_body
from onnxkit.serve.http import install_openapi
from onnxkit.serve.middleware import CLIENT_LEFT, ASGIApp, CancelOnDisconnect, Guard, Shield
from onnxkit.serve.state import AppState
from onnxkit.settings import ServerSettings
from onnxkit.tasks import loader
from onnxkit.tasks.dataplane import DataPlane
from onnxkit.tasks.loader import ModelVersion
from onnxkit.tasks.models import Models

log = logging.getLogger("onnxkit.server")

# In order: TF-Serving's /v1/models/{m}/versions/{v} and .../metadata, and the page's /v1/models/{m}/details
# and /graph, come before OpenAI's /v1/models/{model_id:path}, which would otherwise swallow them.
ROUTERS = (kserve_http.router, tfserving_http.router, metrics_http.router, ui_http.router, openai_http.router,
           tasks_http.router, text_http.router)  # fmt: skip


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    version: str = "1"
    config: ModelConfig | None = None


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def make_models(settings: ServerSettings, metrics: Metrics) -> Models:
    async def load(name: str, version: str, path: Path, config: ModelConfig | None) -> ModelVersion:
        recorder = metrics.recorder(name, version)
        return await asyncio.to_thread(loader.load, name, version, path, config, settings, recorder)

    defaults = {Task.CHAT: settings.default_chat_model, Task.EMBEDDINGS: settings.default_embeddings_model}
    return Models(load, {task: name for task, name in defaults.items() if name})


def make_services(state: AppState) -> list[Service]:
    """Model control over a repository, and the gRPC server."""
    settings = state.settings
    services: list[Service] = []
    if state.plane.controller is not None:
        services.append(state.plane.controller)
    if settings.grpc_port is not None:
        from onnxkit.serve.kserve_grpc import GrpcServer

        services.append(GrpcServer(state, settings.host, settings.grpc_port))
    return services


def unique_names(models: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Two models of one name are never merged: the later ones are renamed ``NAME-2``, ``NAME-3``... with a warning."""
    seen: set[str] = set()
    out = []
    for spec in models:
        name, k = spec.name, 1
        while name in seen:
            k += 1
            name = f"{spec.name}-{k}"
        if name != spec.name:
            log.warning("two models are named %r; serving %s as %r", spec.name, spec.path, name)
            spec = replace(spec, name=name)
        seen.add(name)
        out.append(spec)
    return out


def create_state(settings: ServerSettings, named: tuple[str, ...] = ()) -> AppState:
    """``named``: the models given at start-up; a repository may not take their names."""
    metrics = Metrics()
    models = make_models(settings, metrics)
    controller = None
    if settings.repositories or settings.model_config_files:
        from onnxkit.models.repository import options_from
        from onnxkit.tasks.control import Controller

        controller = Controller(options_from(settings), models, frozenset(named))
    return AppState(settings, models, DataPlane(models, controller), metrics, named=named)


def create_app(settings: ServerSettings, models: Sequence[ModelSpec]) -> FastAPI:
    models = unique_names(models)
    state = create_state(settings, tuple(m.name for m in models))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.gather(*(state.models.load(m.name, m.version, m.path, m.config) for m in models))
        services = make_services(state)
        for service in services:
            await service.start()
        state.plane.started = True
        try:
            yield
        finally:
            for service in reversed(services):
                await service.stop()
            await state.models.close()

    app = FastAPI(
        title="onnxkit",
        version=__version__,
        description="OpenAI-compatible, KServe v2 and TF-Serving APIs on onnxruntime.",
        lifespan=lifespan,
    )
    app.state.onnxkit = state
    add_error_handlers(app)
    install_openapi(app)

    @app.get("/health", tags=["health"])
    async def health() -> Response:
        status, failed = state.health()
        body = {"status": status, "server": "onnxkit", "version": __version__, "pid": os.getpid(),
                **({"unavailable": failed} if failed else {})}  # fmt: skip
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    for router in ROUTERS:
        app.include_router(router)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error a route raises becomes its protocol's error body here, once."""

    def answer(request: Request, err: OnnxkitError, status: int | None = None) -> Response:
        return JSONResponse(error_body(request.url.path, err), status_code=status or int(err.status))

    @app.exception_handler(OnnxkitError)
    async def onnxkit_error(request: Request, exc: OnnxkitError) -> Response:
        return answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        message, param = describe_validation(list(exc.errors()))
        return answer(request, InvalidRequest(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err: OnnxkitError
        if exc.status_code == 404:
            err = ModelNotFound(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = InvalidRequest(f"method {request.method} is not allowed on {request.url.path}")
        else:
            err = InvalidRequest(str(exc.detail))
        return answer(request, err, exc.status_code)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request: Request, exc: ClientDisconnect) -> Response:
        # Not the server's fault, and nobody to answer (the guard and the KServe infer path return
        # silently in this case): a debug line, not an error with a traceback per reset connection,
        # which any client could repeat to flood the log.
        log.debug("%s %s: the client left before sending its whole body", request.method, request.url.path)
        return Response(status_code=CLIENT_LEFT)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # Never a traceback in the response; the log has it.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return answer(request, InternalError(f"internal error ({type(exc).__name__}); see the server log"))


def wrap(app: FastAPI, settings: ServerSettings) -> ASGIApp:
    state: AppState = app.state.onnxkit
    inner = CancelOnDisconnect(kserve_http.InferEndpoint(Shield(app), state))
    guarded = Guard(inner, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes,
                    request_timeout_s=settings.request_timeout_s)
    # Outermost, so rejected requests (401, 413) are logged too.
    return AccessLog(guarded, json_lines=settings.log_json) if settings.access_log else guarded
