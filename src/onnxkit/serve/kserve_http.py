"""KServe v2 REST (with Triton's binary tensor data, classification, repository, configuration and
statistics extensions): a codec around ``tasks.dataplane.DataPlane``.

Handlers are plain Starlette endpoints: bodies are parsed with orjson straight from bytes and
answered with ``Response(bytes)``; no pydantic on the hot path. Infer has one path, the pure-ASGI
``InferEndpoint`` that ``serve.app.wrap`` puts in front of the app: it skips a dozen middleware
and routing layers (~0.1 ms a request, a fifth of the latency budget).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from onnxkit.errors import InternalError, InvalidRequest, OnnxkitError
from onnxkit.runtime.tensors import datatype_of, from_bytes, from_json, to_bytes, to_json_data
from onnxkit.serve.http import PARSE_INLINE_BYTES, app_state, describe_route, json_response, parse_json
from onnxkit.serve.middleware import ASGIApp, Receive, Scope, Send, send_error
from onnxkit.serve.state import AppState
from onnxkit.settings import Limits
from onnxkit.tasks.dataplane import InferRequest, InferResponse, RequestedOutput, classification_count
from onnxkit.types import JSON, Array

HEADER_LENGTH = "inference-header-content-length"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY

log = logging.getLogger("onnxkit.kserve")
router = APIRouter(tags=["kserve"])
Endpoint = Callable[[Request], Awaitable[Response]]


def _route(path: str, methods: list[str]) -> Callable[[Endpoint], Endpoint]:
    def add(endpoint: Endpoint) -> Endpoint:
        router.add_route(path, endpoint, methods=methods, include_in_schema=False)
        return endpoint

    return add


# -- server -------------------------------------------------------------------------------------------
@_route("/v2", ["GET"])
async def server_metadata(request: Request) -> Response:
    return json_response(app_state(request).plane.server_metadata())


@_route("/v2/health/live", ["GET"])
async def live(request: Request) -> Response:
    return Response(status_code=200 if app_state(request).plane.live() else 503)


@_route("/v2/health/ready", ["GET"])
async def ready(request: Request) -> Response:
    return Response(status_code=200 if app_state(request).plane.ready() else 503)


# -- models -------------------------------------------------------------------------------------------
def _name_version(request: Request) -> tuple[str, str | None]:
    p = request.path_params
    return str(p["model"]), (str(p["version"]) if "version" in p else None)


async def get_metadata(request: Request) -> Response:
    return json_response(app_state(request).plane.model_metadata(*_name_version(request)))


async def get_ready(request: Request) -> Response:
    name, version = _name_version(request)
    app_state(request).plane.model_ready(name, version)  # raises 404 / 503 naming the reason
    return json_response({"name": name, "ready": True})


async def get_config(request: Request) -> Response:
    return json_response(app_state(request).plane.model_config(*_name_version(request)))


async def get_stats(request: Request) -> Response:
    """Triton's statistics extension: every model (``/v2/models/stats``), one model, or one version."""
    p = request.path_params
    version = str(p["version"]) if "version" in p else None
    return json_response({"model_stats": app_state(request).plane.statistics(str(p.get("model", "")), version)})


# Before the model routes: "stats" here is not a model name (as in Triton).
router.add_route("/v2/models/stats", get_stats, methods=["GET"], include_in_schema=False)
for _prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
    router.add_route(_prefix, get_metadata, methods=["GET"], include_in_schema=False)
    router.add_route(_prefix + "/stats", get_stats, methods=["GET"], include_in_schema=False)
    router.add_route(_prefix + "/ready", get_ready, methods=["GET"], include_in_schema=False)
    router.add_route(_prefix + "/config", get_config, methods=["GET"], include_in_schema=False)


# -- repository extension ---------------------------------------------------------------------------
async def _options(request: Request) -> JSON:
    body = await request.body()
    if not body.strip():
        return {}
    data = await parse_json(body)
    if not isinstance(data, dict):
        raise InvalidRequest(f"request body is a JSON {type(data).__name__}; expected an object")
    return data


@_route("/v2/repository/index", ["POST"])
async def post_index(request: Request) -> Response:
    ready_only = (await _options(request)).get("ready", False)
    if not isinstance(ready_only, bool):
        raise InvalidRequest(f"'ready' is {ready_only!r}; expected true or false")
    rows = app_state(request).plane.repository_index(ready_only)
    return json_response([
        {"name": r.name, **({"version": r.version} if r.version else {}), "state": r.state, "reason": r.reason}
        for r in rows
    ])


@_route("/v2/repository/models/{model}/load", ["POST"])
async def post_load(request: Request) -> Response:
    await _options(request)
    await app_state(request).plane.load(str(request.path_params["model"]))
    return json_response({})


@_route("/v2/repository/models/{model}/unload", ["POST"])
async def post_unload(request: Request) -> Response:
    await _options(request)
    await app_state(request).plane.unload(str(request.path_params["model"]))
    return json_response({})


# -- infer: the codec ---------------------------------------------------------------------------------
def split_body(body: bytes, header: str | None) -> tuple[JSON, memoryview]:
    if header is not None:
        if not header.isdigit() or int(header) > len(body):
            raise InvalidRequest(
                f"Inference-Header-Content-Length is {header!r}; expected the byte length of the JSON part, "
                f"at most the body's {len(body)} bytes"
            )
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


REQUEST_KEYS = {"id", "parameters", "inputs", "outputs"}
INPUT_KEYS = {"name", "shape", "datatype", "parameters", "data"}
OUTPUT_KEYS = {"name", "parameters"}
REQUEST_PARAMETERS = {"binary_data_output"}
INPUT_PARAMETERS = {"binary_data_size"}
OUTPUT_PARAMETERS = {"binary_data", "classification"}


def _check_keys(obj: JSON, allowed: set[str], where: str) -> None:
    if allowed.issuperset(obj):  # runs per request and per tensor: no set built when all is well
        return
    unknown = sorted(set(obj) - allowed)
    raise InvalidRequest(f"{where} has unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _params(obj: JSON, allowed: set[str], where: str) -> dict[str, Any]:
    """An object's ``parameters``: a JSON object of parameters onnxkit honours (others are a 400)."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidRequest(f"{where}.parameters is {type(params).__name__}; expected an object")
    if not allowed.issuperset(params):
        unknown = sorted(set(params) - allowed)
        raise InvalidRequest(f"{where}.parameters has unsupported parameter(s) {unknown}; supported: {sorted(allowed)}")
    return params


def _flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where}.parameters.{key} is {value!r}; expected true or false")
    return value


def decode_request(
    name: str, version: str | None, req: JSON, binary: memoryview, limits: Limits
) -> tuple[InferRequest, dict[str, bool]]:
    """The request, and whether each output goes back as binary ('' holds the default)."""
    try:
        _check_keys(req, REQUEST_KEYS, "the request")
        inputs = _decode_inputs(req, binary, limits)
    except OnnxkitError as exc:
        raise exc.within(f"model {name!r}") from exc
    binary_default = _flag(_params(req, REQUEST_PARAMETERS, "the request"), "binary_data_output", False, "the request")
    flags: dict[str, bool] = {"": binary_default}
    outputs: list[RequestedOutput] = []
    wanted = req.get("outputs", [])
    if not isinstance(wanted, list):
        raise InvalidRequest(f"model {name!r}: 'outputs' is {type(wanted).__name__}; expected a list")
    for i, out in enumerate(wanted):
        where = f"outputs[{i}]"
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise InvalidRequest(f"model {name!r}: {where} needs a 'name' string")
        _check_keys(out, OUTPUT_KEYS, where)
        p = _params(out, OUTPUT_PARAMETERS, where)
        flags[out["name"]] = _flag(p, "binary_data", binary_default, where)
        k = classification_count(p["classification"], out["name"]) if "classification" in p else 0
        outputs.append(RequestedOutput(out["name"], k))
    return InferRequest(name, inputs, version, outputs, req.get("id")), flags


def _decode_inputs(req: JSON, binary: memoryview, limits: Limits) -> dict[str, Array]:
    items = req.get("inputs")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("the request has no 'inputs' list")
    inputs: dict[str, Array] = {}
    offset = 0
    for i, item in enumerate(items):
        where = f"inputs[{i}]"
        if not isinstance(item, dict) or "name" not in item or "datatype" not in item or "shape" not in item:
            raise InvalidRequest(f"{where} needs 'name', 'datatype' and 'shape'")
        _check_keys(item, INPUT_KEYS, where)
        name = item["name"]
        if not isinstance(name, str):
            raise InvalidRequest(f"{where}.name is {name!r}; expected a string")
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is sent twice")
        size = _params(item, INPUT_PARAMETERS, where).get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
                remain = len(binary) - offset
                raise InvalidRequest(f"input {name!r} claims binary_data_size {size!r}; {remain} bytes remain")
            if "data" in item:
                raise InvalidRequest(f"input {name!r} has both 'data' and a binary_data_size parameter; send one")
            inputs[name] = from_bytes(name, item["datatype"], item["shape"], binary[offset : offset + size], limits)
            offset += size
        elif "data" in item:
            inputs[name] = from_json(name, item["datatype"], item["shape"], item["data"], limits)
        else:
            raise InvalidRequest(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    if offset != len(binary):
        raise InvalidRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    return inputs


def encode_response(response: InferResponse, binary: dict[str, bool]) -> tuple[bytes, dict[str, str]]:
    outputs: list[JSON] = []
    chunks: list[bytes] = []
    for name, array in response.outputs.items():
        out: JSON = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if binary.get(name, binary[""]):
            raw = to_bytes(array)
            out["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            out["data"] = to_json_data(array)
        outputs.append(out)
    body: JSON = {"model_name": response.model, "model_version": response.version, "outputs": outputs}
    if response.id is not None:
        body["id"] = response.id
    header = orjson.dumps(body, option=_NUMPY)
    if not chunks:
        return header, {"content-type": "application/json"}
    return b"".join([header, *chunks]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def _decode(
    name: str, version: str | None, body: bytes, header: str | None, limits: Limits
) -> tuple[InferRequest, dict[str, bool]]:
    req, binary = split_body(body, header)
    return decode_request(name, version, req, binary, limits)


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorParameters(_Parameters):
    binary_data_size: int | None = Field(default=None, ge=0)


class KServeTensor(BaseModel):
    """An input tensor: ``data`` flat or nested, row-major (or binary, with ``binary_data_size``)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int]
    datatype: Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                      "FP32", "FP64", "BYTES"]  # fmt: skip
    parameters: TensorParameters | None = None
    data: list[Any] | None = None


class OutputParameters(_Parameters):
    binary_data: bool | None = None
    classification: int | None = Field(default=None, ge=0)


class KServeOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: OutputParameters | None = None


class RequestParameters(_Parameters):
    binary_data_output: bool | None = None


class KServeInferRequest(BaseModel):
    """KServe v2 ``POST /v2/models/{model}[/versions/{version}]/infer`` (JSON; binary tensors after
    ``Inference-Header-Content-Length`` bytes). Described for the schema; ``decode_request`` checks it."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[KServeTensor] = Field(min_length=1)
    outputs: list[KServeOutput] | None = None


describe_route("/v2/models/{model}/infer", "post", KServeInferRequest, "KServe v2 inference", ["model"])
describe_route("/v2/models/{model}/versions/{version}/infer", "post", KServeInferRequest,
               "KServe v2 inference on one version", ["model", "version"])  # fmt: skip


INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class InferEndpoint:
    """``POST /v2/models/{m}[/versions/{v}]/infer`` straight to the data plane; other requests pass through."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

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
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"inference-header-content-length"), None
        )
        body = b"".join(chunks)
        limits = self.state.settings.limits
        try:
            # decoding and encoding grow with the tensors: a large body is done in a worker thread
            if len(body) > PARSE_INLINE_BYTES:
                request, flags = await asyncio.to_thread(_decode, match[1], match[2], body, header, limits)
            else:
                request, flags = _decode(match[1], match[2], body, header, limits)
            response = await self.state.plane.infer(request)
            if sum(a.nbytes for a in response.outputs.values()) > PARSE_INLINE_BYTES:
                content, headers = await asyncio.to_thread(encode_response, response, flags)
            else:
                content, headers = encode_response(response, flags)
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
