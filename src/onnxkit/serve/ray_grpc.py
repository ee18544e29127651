"""KServe v2 gRPC through Ray Serve's gRPC proxy.

Ray's proxy registers ``inference.GRPCInferenceService`` from the generated ``add_..._to_server``
and hands each call to the replica's method of the same name, with the request message and Ray's
``grpc_context``. Each method here runs the servicer ``onnxkit serve`` runs (``serve.kserve_grpc``)
over the replica's app state; its ``context.abort`` becomes a status code on Ray's context, which the
proxy sends back. With one application on the cluster the proxy needs no ``application`` metadata,
so tritonclient reaches it unchanged.
"""

from __future__ import annotations

import sys
from typing import Any

from onnxkit.serve._proto import grpc_service_pb2, grpc_service_pb2_grpc

# Ray pickles each request and response between its proxy and the replica. protoc named the
# messages' module after the .proto file ("grpc_service_pb2"), so pickle looks them up under that
# name: both the proxy (through SERVICER_FUNCTION) and the replicas import this module first.
sys.modules.setdefault("grpc_service_pb2", grpc_service_pb2)
SERVICER_FUNCTION = "onnxkit.serve.ray_grpc.add_servicer_to_server"
# The unary calls of inference.GRPCInferenceService that the servicer implements.
METHODS = (
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    "ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
)


def add_servicer_to_server(servicer: Any, server: Any) -> None:
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]


class Aborted(Exception):
    """Raised where grpc.aio's ``abort`` would end the call; the code is already on Ray's context."""


class RayContext:
    """The part of ``grpc.aio.ServicerContext`` the servicer uses, over Ray Serve's gRPC context."""

    def __init__(self, ray_context: Any) -> None:
        self.ray_context = ray_context

    def invocation_metadata(self) -> Any:
        return self.ray_context.invocation_metadata()

    async def abort(self, code: Any, details: str) -> None:
        self.ray_context.set_code(code)
        self.ray_context.set_details(details)
        raise Aborted(details)


def _method(name: str) -> Any:
    async def call(self: KServeGrpc, request: Any, grpc_context: Any = None) -> Any:
        return await getattr(self.servicer, name)(request, RayContext(grpc_context))

    call.__name__ = call.__qualname__ = name
    return call


class KServeGrpc:
    """Mixed into the replica; ``servicer`` is set once its app state exists."""

    servicer: Any = None


for _name in METHODS:
    setattr(KServeGrpc, _name, _method(_name))
