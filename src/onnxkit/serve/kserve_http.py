"""KServe v2 REST (with Triton's binary tensor data and repository extensions).

Handlers are plain Starlette endpoints: the body is parsed with orjson straight
from bytes and answered with ``Response(bytes)``; no pydantic on the hot path.
A transport converts wire format <-> arrays and nothing else; ``tasks.tensor``
does the checking and the running.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from onnxkit import __version__
from onnxkit.errors import InternalError, InvalidRequest, OnnxkitError
from onnxkit.runtime.tensors import from_bytes, from_json, to_bytes, to_json_data
from onnxkit.serve.middleware import Receive, Scope, Send, send_error
from onnxkit.serve.state import AppState
from onnxkit.tasks.tensor import TensorModel, metadata, resolve, statistics
from onnxkit.types import JSON, Array

EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "model_configuration", "statistics"]
HEADER_LENGTH = "inference-header-content-length"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

T = TypeVar("T")
log = logging.getLogger("onnxkit.kserve")
router = APIRouter(tags=["kserve"])
Endpoint = Callable[[Request], Awaitable[Response]]


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.onnxkit
    return state


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=_NUMPY), status_code=status, media_type="application/json")


def _route(path: str, methods: list[str]) -> Callable[[Endpoint], Endpoint]:
    def add(endpoint: Endpoint) -> Endpoint:
        router.add_route(path, endpoint, methods=methods, include_in_schema=False)
        return endpoint

    return add


# -- server -------------------------------------------------------------------------------------------
@_route("/v2", ["GET"])
async def server_metadata(request: Request) -> Response:
    return json_response({"name": "onnxkit", "version": __version__, "extensions": EXTENSIONS})


@_route("/v2/health/live", ["GET"])
async def live(request: Request) -> Response:
    return Response(status_code=200)


@_route("/v2/health/ready", ["GET"])
async def ready(request: Request) -> Response:
    # Ready once start-up loading is done; a model that failed is reported per model, not here,
    # so one corrupt model never takes the others out of a load balancer.
    return Response(status_code=200 if _state(request).started else 503)


# -- models -------------------------------------------------------------------------------------------
def _name_version(request: Request) -> tuple[str, str | None]:
    p = request.path_params
    return str(p["model"]), (str(p["version"]) if "version" in p else None)


async def get_metadata(request: Request) -> Response:
    name, version = _name_version(request)
    return json_response(metadata(_state(request).store, name, version))


async def get_ready(request: Request) -> Response:
    name, version = _name_version(request)
    _state(request).store.get(name, version)  # raises 404 / 503 naming the reason
    return json_response({"name": name, "ready": True})


async def get_config(request: Request) -> Response:
    name, version = _name_version(request)
    return json_response(resolve(_state(request).store, name, version).model_config())


async def get_stats(request: Request) -> Response:
    """Triton's statistics extension: every model (``/v2/models/stats``), one model, or one version."""
    p = request.path_params
    name = str(p.get("model", ""))
    version = str(p["version"]) if "version" in p else None
    return json_response({"model_stats": statistics(_state(request).store, name, version)})


async def post_infer(request: Request) -> Response:
    name, version = _name_version(request)
    body = await request.body()
    model = resolve(_state(request).store, name, version)
    content, headers = await infer(model, name, body, request.headers.get(HEADER_LENGTH))
    return Response(content, headers=headers)


async def infer(model: TensorModel, name: str, body: bytes, header_length: str | None) -> tuple[bytes, dict[str, str]]:
    """One v2 infer request: the response body and its content headers."""
    req, binary = split_body(body, header_length)
    inputs, outputs, classes, binary_out = decode_request(req, binary, name)
    result = await model.infer(inputs, outputs, classification=classes)
    return encode_response(name, model.version, req.get("id"), result, binary_out)


def split_body(body: bytes, header: str | None) -> tuple[JSON, memoryview]:
    if header is not None:
        if not header.isdigit() or int(header) > len(body):
            raise InvalidRequest(f"Inference-Header-Content-Length is {header!r}; the body has {len(body)} bytes")
        n = int(header)
        json_part, binary = body[:n], memoryview(body)[n:]
    else:
        json_part, binary = body, memoryview(b"")
    try:
        req = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from exc
    if not isinstance(req, dict):
        raise InvalidRequest("request body must be a JSON object with 'inputs'")
    return req, binary


def _params(obj: Any) -> dict[str, Any]:
    params = obj.get("parameters") if isinstance(obj, dict) else None
    return params if isinstance(params, dict) else {}


def decode_request(
    req: JSON, binary: memoryview, model: str
) -> tuple[dict[str, Array], list[str] | None, dict[str, int], dict[str, bool]]:
    """(inputs, requested outputs, classification counts, binary flag per output ('' = default))."""
    items = req.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidRequest(f"model {model!r}: the request has no 'inputs' list")
    inputs: dict[str, Array] = {}
    offset = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "name" not in item or "datatype" not in item or "shape" not in item:
            raise InvalidRequest(f"model {model!r}: inputs[{i}] needs 'name', 'datatype' and 'shape'")
        name = str(item["name"])
        size = _params(item).get("binary_data_size")
        try:
            if size is not None:
                if not isinstance(size, int) or offset + size > len(binary):
                    raise InvalidRequest(
                        f"input {name!r} claims binary_data_size {size}; {len(binary) - offset} bytes remain"
                    )
                inputs[name] = from_bytes(name, item["datatype"], item["shape"], binary[offset : offset + size])
                offset += size
            elif "data" in item:
                inputs[name] = from_json(name, item["datatype"], item["shape"], item["data"])
            else:
                raise InvalidRequest(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
        except OnnxkitError as exc:
            exc.message = f"model {model!r}: {exc.message}"
            raise
    if offset != len(binary):
        raise InvalidRequest(f"model {model!r}: {len(binary) - offset} bytes of binary data belong to no input")
    binary_default = bool(_params(req).get("binary_data_output", False))
    flags: dict[str, bool] = {"": binary_default}
    classes: dict[str, int] = {}
    outputs: list[str] | None = None
    wanted = req.get("outputs")
    if isinstance(wanted, list) and wanted:
        outputs = []
        for out in wanted:
            if not isinstance(out, dict) or "name" not in out:
                raise InvalidRequest(f"model {model!r}: each requested output needs a 'name'")
            name = str(out["name"])
            p = _params(out)
            flags[name] = bool(p.get("binary_data", binary_default))
            if p.get("classification"):
                classes[name] = int(p["classification"])
            outputs.append(name)
    return inputs, outputs, classes, flags


def encode_response(
    model: str, version: str, request_id: Any, result: dict[str, Array], binary: dict[str, bool]
) -> tuple[bytes, dict[str, str]]:
    outputs: list[JSON] = []
    chunks: list[bytes] = []
    for name, array in result.items():
        out: JSON = {"name": name, "datatype": _datatype(array), "shape": list(array.shape)}
        if binary.get(name, binary[""]):
            raw = to_bytes(array)
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = to_json_data(array)
        outputs.append(out)
    body: JSON = {"model_name": model, "model_version": version, "outputs": outputs}
    if request_id is not None:
        body["id"] = request_id
    header = orjson.dumps(body, option=_NUMPY)
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def _datatype(array: Array) -> str:
    from onnxkit.runtime.tensors import datatype_of

    return datatype_of(array.dtype)


# Before the model routes: "stats" here is not a model name (as in Triton).
router.add_route("/v2/models/stats", get_stats, methods=["GET"], include_in_schema=False)
for _prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
    router.add_route(_prefix, get_metadata, methods=["GET"], include_in_schema=False)
    router.add_route(_prefix + "/stats", get_stats, methods=["GET"], include_in_schema=False)
    router.add_route(_prefix + "/ready", get_ready, methods=["GET"], include_in_schema=False)
    router.add_route(_prefix + "/config", get_config, methods=["GET"], include_in_schema=False)
    router.add_route(_prefix + "/infer", post_infer, methods=["POST"], include_in_schema=False)


# -- repository extension ---------------------------------------------------------------------------
async def _json_body(request: Request) -> JSON:
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def repository_index(state: AppState, ready_only: bool) -> list[dict[str, str]]:
    repo = state.extras.get("repository")
    if repo is not None:
        rows: list[dict[str, str]] = repo.index(ready_only)
        return rows
    rows = []
    for model in state.store.models():
        for v in model.versions.values():
            if not ready_only or v.ready:
                rows.append({"name": model.name, "version": v.version, "state": v.state.value, "reason": v.reason})
    return rows


def _repository(state: AppState) -> Any:
    repo = state.extras.get("repository")
    if repo is None:
        raise InvalidRequest("model control is off: start the server with --repository DIR --model-control explicit")
    return repo


@_route("/v2/repository/index", ["POST"])
async def post_index(request: Request) -> Response:
    body = await _json_body(request)
    return json_response(repository_index(_state(request), bool(body.get("ready", False))))


@_route("/v2/repository/models/{model}/load", ["POST"])
async def post_load(request: Request) -> Response:
    await _json_body(request)
    await _repository(_state(request)).load(str(request.path_params["model"]))
    return json_response({})


@_route("/v2/repository/models/{model}/unload", ["POST"])
async def post_unload(request: Request) -> Response:
    await _json_body(request)
    await _repository(_state(request)).unload(str(request.path_params["model"]))
    return json_response({})


# -- the infer fast path ----------------------------------------------------------------------------
INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class FastInfer:
    """``POST /v2/models/{m}[/versions/{v}]/infer`` straight to the data plane.

    Pure ASGI in front of the FastAPI app: it skips a dozen middleware and routing layers
    (~0.1 ms a request, a fifth of the latency budget). Other requests pass through; the
    router's own infer route stays for apps used without ``serve.app.wrap``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: AppState = app.state.onnxkit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = INFER_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        header = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"inference-header-content-length"),
            None,
        )
        try:
            model = resolve(self.state.store, match[1], match[2])
            work = infer(model, match[1], b"".join(chunks), header)
            if model.config.max_queue_delay_ms > 0:
                content, headers = await _unless_disconnected(work, receive)
            else:  # no queue delay: waits are one batch long, not worth a watcher task (~30 us)
                content, headers = await work
        except _Disconnected:
            return
        except OnnxkitError as exc:
            await send_error(scope, send, exc)
            return
        except Exception:
            log.exception("KServe infer failed")
            await send_error(scope, send, InternalError("internal error; see the server log"))
            return
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": content})


class _Disconnected(Exception):
    pass


async def _unless_disconnected(work: Awaitable[T], receive: Receive) -> T:
    """``work``, cancelled if the client goes away first (so a queued request is skipped, not run)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(receive())  # after the body, the next message is a disconnect
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        raise _Disconnected
    return task.result()
