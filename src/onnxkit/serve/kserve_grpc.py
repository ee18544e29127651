"""KServe v2 gRPC (``inference.GRPCInferenceService``) on grpc.aio, in the server's event loop.

A codec around ``tasks.dataplane.DataPlane``, as REST is: decode tensors, infer, encode. Outputs
always go back as ``raw_output_contents`` (what Triton does; tritonclient reads
it); inputs may be typed ``contents`` or ``raw_input_contents``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from grpc import aio

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.runtime.tensors import datatype_of, from_bytes, from_json, to_bytes
from onnxkit.serve._proto import grpc_service_pb2 as pb
from onnxkit.serve._proto import grpc_service_pb2_grpc as pb_grpc
from onnxkit.serve.http import PARSE_INLINE_BYTES
from onnxkit.serve.state import AppState
from onnxkit.settings import Limits
from onnxkit.tasks.dataplane import InferRequest, RequestedOutput, classification_count
from onnxkit.types import Array

log = logging.getLogger("onnxkit.grpc")

STATUS_CODES: dict[int, grpc.StatusCode] = {
    HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    HTTPStatus.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.TOO_MANY_REQUESTS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}
# Typed contents field per datatype (the v2 spec's table); FP16 has none: raw contents only.
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

Req = TypeVar("Req")
Res = TypeVar("Res")
Handler = Callable[[Any, Req, aio.ServicerContext], Awaitable[Res]]


def _translated(method: Handler[Req, Res]) -> Handler[Req, Res]:
    """Check the API key, and turn onnxkit errors into gRPC status codes (once, here)."""

    async def wrapper(self: Servicer, request: Req, context: aio.ServicerContext) -> Res:
        key = self.state.settings.api_key
        if key:
            sent = dict(context.invocation_metadata() or ()).get("authorization", "")
            token = sent[7:] if str(sent)[:7].lower() == "bearer " else sent
            if not hmac.compare_digest(str(token).encode(), key.encode()):
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "API key missing or wrong: send metadata 'authorization: Bearer <key>'",
                )
        try:
            return await method(self, request, context)
        except OnnxkitError as exc:
            await context.abort(STATUS_CODES.get(int(exc.status), grpc.StatusCode.INTERNAL), exc.message)
            raise  # abort raises; this keeps type checkers honest
        except Exception:
            log.exception("gRPC %s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
            raise

    return wrapper


def _param(p: pb.InferParameter) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


REQUEST_PARAMETERS: set[str] = set()
INPUT_PARAMETERS: set[str] = set()
OUTPUT_PARAMETERS = {"classification"}


def _check_parameters(params: Any, allowed: set[str], where: str) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidRequest(f"{where} has unsupported parameter(s) {unknown}; supported: {sorted(allowed)}")


def decode_request(request: pb.ModelInferRequest, limits: Limits) -> InferRequest:
    try:
        _check_parameters(request.parameters, REQUEST_PARAMETERS, "the request")
        inputs = _decode(request, limits)
    except OnnxkitError as exc:
        raise exc.within(f"model {request.model_name!r}") from exc
    return InferRequest(
        request.model_name, inputs, request.model_version or None, requested_outputs(request), request.id
    )


def _decode(request: pb.ModelInferRequest, limits: Limits) -> dict[str, Array]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input, in input order"
        )
    inputs: dict[str, Array] = {}
    for i, tensor in enumerate(request.inputs):
        _check_parameters(tensor.parameters, INPUT_PARAMETERS, f"input {tensor.name!r}")
        if tensor.name in inputs:
            raise InvalidRequest(f"input {tensor.name!r} is sent twice")
        if raw:
            inputs[tensor.name] = from_bytes(tensor.name, tensor.datatype, list(tensor.shape), raw[i], limits)
            continue
        field = CONTENTS.get(tensor.datatype)
        if field is None:
            raise InvalidRequest(
                f"input {tensor.name!r} is {tensor.datatype}, which has no typed contents; "
                "send it in raw_input_contents"
            )
        data = list(getattr(tensor.contents, field))
        inputs[tensor.name] = from_json(tensor.name, tensor.datatype, list(tensor.shape), data, limits)
    return inputs


def requested_outputs(request: pb.ModelInferRequest) -> list[RequestedOutput]:
    out = []
    for o in request.outputs:
        _check_parameters(o.parameters, OUTPUT_PARAMETERS, f"output {o.name!r}")
        k = 0
        if "classification" in o.parameters:
            k = classification_count(_param(o.parameters["classification"]), o.name)
        out.append(RequestedOutput(o.name, k))
    return out


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: AppState) -> None:
        self.state = state

    @_translated
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_translated
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.plane.ready())

    @_translated
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self.state.plane.model_ready(request.name, request.version or None)
        except OnnxkitError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_translated
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        meta = self.state.plane.server_metadata()
        return pb.ServerMetadataResponse(name=meta["name"], version=meta["version"], extensions=meta["extensions"])

    @_translated
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        meta = self.state.plane.model_metadata(request.name, request.version or None)
        tm = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tm(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]],
        )

    @_translated
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: aio.ServicerContext
    ) -> pb.ModelInferResponse:
        limits = self.state.settings.limits
        if request.ByteSize() > PARSE_INLINE_BYTES:  # decoding grows with the tensors: off the event loop
            infer = await asyncio.to_thread(decode_request, request, limits)
        else:
            infer = decode_request(request, limits)
        result = await self.state.plane.infer(infer)
        response = pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=request.id)
        for name, array in result.outputs.items():
            response.outputs.add(name=name, datatype=datatype_of(array.dtype), shape=list(array.shape))
            response.raw_output_contents.append(to_bytes(array))
        return response

    @_translated
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        # The REST /config dict is protobuf JSON of Triton's ModelConfig: parse it, so both answer alike.
        # Strict: a key the proto lacks fails here (and in the tests), not silently on the wire.
        config = self.state.plane.model_config(request.name, request.version or None)
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, pb.ModelConfig()))

    @_translated
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        stats = self.state.plane.statistics(request.name, request.version or None)
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    @_translated
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        rows = self.state.plane.repository_index(request.ready)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[index(name=r.name, version=r.version, state=r.state, reason=r.reason) for r in rows]
        )

    @_translated
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        await self.state.plane.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @_translated
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self.state.plane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


class GrpcServer:
    """Started and stopped with the app (see ``serve.app.make_services``)."""

    def __init__(self, state: AppState, host: str, port: int) -> None:
        self.state = state
        self.host = host
        self.port = port
        # a request is held to the HTTP body limit; gRPC refuses a larger one before reading it
        self.max_receive_bytes = state.settings.max_body_bytes
        self.max_send_bytes = 256 * 1024 * 1024
        self._server: aio.Server | None = None

    async def start(self) -> None:
        state = self.state
        options = [
            ("grpc.max_receive_message_length", self.max_receive_bytes),
            ("grpc.max_send_message_length", self.max_send_bytes),
            ("grpc.so_reuseport", 0),  # a busy port must fail loudly, not be shared
        ]
        server = aio.server(options=options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(state), server)  # type: ignore[no-untyped-call]
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OnnxkitError(
                f"cannot listen for gRPC on {address}: {exc}; pick another --grpc-port"
            ) from exc
        if bound == 0:
            raise OnnxkitError(f"cannot listen for gRPC on {address}; pick another --grpc-port")
        self.port = bound
        await server.start()
        self._server = server
        state.grpc_port = bound
        log.info("KServe v2 gRPC listening on %s:%d", self.host, bound)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=2.0)
            self._server = None
