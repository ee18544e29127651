"""The short way through Ray Serve's HTTP proxy: a request reaches the replica's app through a handle call.

Ray Serve's own HTTP path hands the replica only the request's scope; the replica then calls the
proxy actor back for the body, and again to wait for the client's disconnect, a call it cancels (and
the proxy answers with a formatted traceback) once the response is out: three Ray actor calls per
request besides the request itself, most of the latency the proxy adds (bench/bench_ray.py). Here
the proxy (``Front``, loaded into every proxy with ``ray_proxy``) reads a body of known, bounded
length itself and sends scope and body in one streaming handle call to the replica's ``asgi_call``
(``answer`` below), which runs the same app and streams the ASGI messages back. A client that goes
away cancels the call, which cancels the request's task in the replica as ``CancelOnDisconnect``
does in one process. Everything else takes Ray's own path unchanged: chunked or large bodies (the
replica's ``Guard`` answers 413 before reading), websockets, Ray's ``/-/`` routes, and every request
while onnxkit's is not the cluster's only application (named ``onnxkit``, at ``/``).

Kept light: the proxy side runs in every proxy, which never loads a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from onnxkit.errors import InternalError, ModelUnavailable, OnnxkitError, Overloaded
from onnxkit.serve.middleware import ASGIApp, Message, Receive, Scope, Send, send_error

APP_NAME = "onnxkit"
DEPLOYMENT = "onnxkit"
METHOD = "asgi_call"
# In the scope of a request that came this way (``/health`` says which way it came).
VIA = "onnxkit.ray_handle"
# Bodies up to this size are read by the proxy and travel with the call; bigger ones stream on Ray's path.
# Ray Serve's gRPC channel between proxy and replica takes messages of 4 MiB at most by default
# (RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH), in both directions: a request stays well below it, and
# an answer goes back in pieces of at most PIECE bytes.
MAX_FORWARDED_BODY = 1 << 20
PIECE = 1 << 20
# Scope keys the app reads; the rest (uvicorn's state, extensions) stays in the proxy.
SCOPE_KEYS = ("type", "asgi", "http_version", "server", "client", "scheme", "method", "root_path", "path",
              "raw_path", "query_string", "headers")
log = logging.getLogger("onnxkit.ray")
LOST = ("the replica serving this request stopped before it answered (Ray Serve is replacing it); "
        "retry the request")
ROUTES_TTL_S = 2.0  # how long the proxy trusts what it last learnt of the applications on the cluster


# ---- replica side -------------------------------------------------------------------------------


async def answer(app: ASGIApp, scope: Scope, body: bytes) -> AsyncGenerator[list[Message], None]:
    """Run ``app`` on one request; yield its ASGI messages, a batch at each point the app waits."""
    queue: asyncio.Queue[Message | None] = asyncio.Queue()
    pending: Message | None = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> Message:
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        # The body is all there is; a client that leaves cancels this call (and so the app's task).
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        queue.put_nowait(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            queue.put_nowait(None)

    task = asyncio.get_running_loop().create_task(run())
    try:
        # An empty first batch tells the proxy's router at once that this replica took the request
        # (gRPC holds the "accepted" metadata back until a message goes out). Without it, a replica
        # dying mid-request looks to the router like one that never took it, and the router sends
        # the request again, to another replica: a second run of work that may not be repeatable.
        yield []
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            done = batch[-1] is None
            messages: list[Message] = []
            for message in batch:
                if message is None:
                    continue
                body = message.get("body", b"") if message["type"] == "http.response.body" else b""
                if len(body) <= PIECE:
                    messages.append(message)
                    continue
                more = message.get("more_body", False)
                for at in range(0, len(body), PIECE):  # one gRPC message each
                    last = at + PIECE >= len(body)
                    messages.append({"type": "http.response.body", "body": body[at:at + PIECE],
                                     "more_body": more or not last})
                    yield messages
                    messages = []
            if messages:
                yield messages
            if done:
                break
        await task  # the app's own exception, if one escaped it
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


# ---- proxy side ---------------------------------------------------------------------------------


def _forwardable(scope: Scope) -> bool:
    if scope["type"] != "http" or str(scope.get("path", "")).startswith("/-/"):
        return False
    length: bytes | None = None
    for key, value in scope.get("headers") or []:
        if key == b"transfer-encoding":
            return False
        if key == b"content-length":
            length = value
    return length is None or (length.isdigit() and int(length) <= MAX_FORWARDED_BODY)


class Front:
    """In Ray Serve's HTTP proxy: requests for onnxkit go to a replica in one handle call."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.handle: Any = None
        self.checked = 0.0  # when the applications were last looked up
        self.ours = False  # onnxkit's is the only application on the cluster
        self.looking: asyncio.Task[Any] | None = None

    def _handle(self) -> Any:
        """The handle to onnxkit's deployment, or None while requests must take Ray's own path."""
        now = time.monotonic()
        if now - self.checked > ROUTES_TTL_S and self.looking is None:
            # Asking the controller blocks: a thread does it while requests go on with what was known.
            self.checked = now
            self.looking = asyncio.get_running_loop().create_task(asyncio.to_thread(self._look))
            self.looking.add_done_callback(self._looked)
        return self.handle if self.ours else None

    def _look(self) -> Any:
        """In a thread: onnxkit's deployment handle when it is the only application, else None."""
        if not _only_application():
            return None
        from ray import serve

        return serve.get_deployment_handle(DEPLOYMENT, APP_NAME)  # the proxy's own, from Serve's cache

    def _looked(self, task: asyncio.Task[Any]) -> None:
        self.looking = None
        base = None if task.cancelled() or task.exception() is not None else task.result()
        # Used once the proxy has set the handle up for its route (its router, on this event loop).
        self.ours = base is not None and bool(base.is_initialized)
        if base is not None and self.ours and self.handle is None:
            self.handle = base.options(
                method_name=METHOD, stream=True,
                # as the proxy itself reaches replicas: over gRPC when RAY_SERVE_PROXY_USE_GRPC=1
                _by_reference=os.environ.get("RAY_SERVE_PROXY_USE_GRPC") != "1",
                # scope and messages are plain dicts, lists, bytes and numbers
                request_serialization="pickle", response_serialization="pickle")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handle = self._handle() if _forwardable(scope) else None
        if handle is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left while sending
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        forwarded = {k: scope[k] for k in SCOPE_KEYS if k in scope}
        # As Ray's own path does: the client's X-Request-ID, or a new one, on the request and the response.
        headers = list(forwarded.get("headers") or [])
        request_id = next((v for k, v in headers if k == b"x-request-id"), None)
        if request_id is None:
            request_id = str(uuid.uuid4()).encode()
            headers.append((b"x-request-id", request_id))
        forwarded["headers"] = headers
        forwarded["extensions"] = {VIA: {}}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        await forward(handle, forwarded, b"".join(chunks), receive, send_with_id)


async def forward(handle: Any, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
    """One handle call: the replica's messages to the client; Ray's failures in the protocol's shape."""
    response = handle.remote(scope, body)
    finished = gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        if not finished:
            gone = True
            response.cancel()  # the client left: the replica's task for it is cancelled

    watcher = asyncio.get_running_loop().create_task(watch())
    started = False
    try:
        async for messages in response:
            for message in messages:
                if message["type"] == "http.response.start":
                    started = True
                elif message["type"] == "http.response.body" and not message.get("more_body", False):
                    finished = True
                await send(message)
    except BaseException as exc:  # as Ray's own proxy: a lost replica can surface as a cancellation
        task = asyncio.current_task()
        if gone or (task is not None and task.cancelling()):
            raise  # the client left, or the proxy stops: nobody to answer
        if started:
            raise  # the answer had begun: nothing here can mend it, the client sees the cut
        log.warning("onnxkit request %s %s failed in Ray Serve: %s: %s", scope.get("method"), scope.get("path"),
                    type(exc).__name__, exc)
        await send_error(scope, send, _error(exc))
    finally:
        finished = True
        watcher.cancel()


def _error(exc: BaseException) -> OnnxkitError:
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, BackPressureError):
        return Overloaded(f"onnxkit's replicas and their queue are full ({exc}); retry later")
    if isinstance(exc, (RayActorError, DeploymentUnavailableError, asyncio.CancelledError)):
        return ModelUnavailable(f"{LOST} ({type(exc).__name__})")
    return InternalError(f"Ray Serve failed the request: {type(exc).__name__}: {exc}")


def _only_application() -> bool:
    """Whether onnxkit's is the only application on the cluster, at ``/`` (another's routes are Ray's to match)."""
    try:
        from ray.serve.context import _get_global_client

        # The controller's own account of the applications (serve.status() leaves out the route prefixes).
        apps = _get_global_client().get_serve_details().get("applications", {})  # type: ignore[union-attr]
    except Exception:
        return False
    ours = apps.get(APP_NAME) or {}
    return set(apps) == {APP_NAME} and ours.get("route_prefix") == "/" and ours.get("status") != "DELETING"
