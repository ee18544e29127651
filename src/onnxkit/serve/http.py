"""What the HTTP transports share: the app's state, request bodies in, JSON out, and the OpenAPI schema.

Bodies are parsed by orjson (strict: invalid UTF-8, lone surrogates, NaN, Infinity and nesting past
1024 levels are a 400) and validated by pydantic, both in a worker thread when the body is large, so a
big request never stalls the event loop. Routes declare their body model with ``body_of`` so the
OpenAPI schema (``/openapi.json``, and the fuzz test that reads it) describes exactly what is validated.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from onnxkit.errors import InvalidRequest
from onnxkit.serve.errors import describe_validation
from onnxkit.serve.state import AppState

# Bodies larger than this are parsed and validated in a worker thread.
PARSE_INLINE_BYTES = 64 * 1024
M = TypeVar("M", bound=BaseModel)
BODY_MODELS: dict[str, type[BaseModel]] = {}
# Routes served outside FastAPI's router (KServe's infer path) or as plain Starlette routes, described in the
# schema all the same: path -> method -> operation
EXTRA_PATHS: dict[str, dict[str, Any]] = {}


def describe_route(path: str, method: str, model: type[BaseModel], summary: str, parameters: list[str]) -> None:
    """Put a route that FastAPI does not describe (a Starlette or pure-ASGI endpoint) into ``/openapi.json``."""
    BODY_MODELS[model.__name__] = model
    EXTRA_PATHS.setdefault(path, {})[method] = {
        "summary": summary,
        "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in parameters],
        **body_of(model),
        "responses": {"200": {"description": "OK"}, "400": {"description": "a bad request, named"}},
    }


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.onnxkit
    return state


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


async def parse_json(raw: bytes) -> Any:
    """JSON from request bytes: a 400 naming the problem, parsed off the event loop when large."""
    try:
        if len(raw) > PARSE_INLINE_BYTES:
            return await asyncio.to_thread(orjson.loads, raw)
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"invalid request: the body is not valid JSON ({exc}); text must be valid UTF-8 without lone surrogates, "
            "numbers finite, nesting at most 1024 levels"
        ) from exc


async def read_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; a 400 naming the first fields that are wrong."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("request body is empty; expected a JSON object")
    data = await parse_json(raw)
    if not isinstance(data, dict):
        raise InvalidRequest(f"request body is a JSON {type(data).__name__}; expected an object")
    try:
        if len(raw) > PARSE_INLINE_BYTES:
            return await asyncio.to_thread(model.model_validate, data)
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation(list(exc.errors()))
        raise InvalidRequest(message, param=param) from exc


def body_of(model: type[BaseModel]) -> dict[str, Any]:
    """A route's ``openapi_extra``: its JSON body is ``model``."""
    BODY_MODELS[model.__name__] = model
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def install_openapi(app: FastAPI) -> None:
    """``app.openapi`` with the body models of ``body_of`` routes in ``components.schemas``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for path, operations in EXTRA_PATHS.items():
                schema["paths"].setdefault(path, {}).update(operations)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model in BODY_MODELS.items():
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[name] = found
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
