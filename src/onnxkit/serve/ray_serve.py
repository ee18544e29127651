"""``onnxkit serve --ray``: the app ``onnxkit serve`` runs, as a Ray Serve deployment.

Each replica builds the same ASGI app (``serve.app.create_app`` + ``wrap``) over the same models,
landed on its node by ``ray_shipping``, and its lifespan loads them once. Ray Serve's HTTP proxy
listens on ``--host``/``--port`` and spreads requests over the replicas. The driver (this process)
stays up while the application runs: ``/health`` names its pid, so ``onnxkit stop`` and
``--detach`` work as they do without Ray, and SIGTERM tears the application down.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from onnxkit.runtime.memory import settle_heap
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.middleware import AfterStartup, ASGIApp, Message, Receive, Scope, Send
from onnxkit.serve.ray_front import APP_NAME, DEPLOYMENT, VIA, answer
from onnxkit.serve.ray_grpc import KServeGrpc
from onnxkit.serve.ray_shipping import Shipment, land, ship
from onnxkit.settings import ServerSettings, default_home

QUIET_LOGS = {"enable_access_log": False, "log_level": "WARNING"}


@dataclass(frozen=True)
class Scaling:
    replicas: int | None = 1  # None: autoscale between 1 and max_replicas
    max_replicas: int = 1
    target_ongoing_requests: float = 8.0

    @property
    def most(self) -> int:
        return self.max_replicas if self.replicas is None else self.replicas


class OnnxkitReplica(KServeGrpc):
    """One replica: the models landed on this node, then the app over them (HTTP, and gRPC methods)."""

    def __init__(
        self,
        settings: ServerSettings,
        models: Sequence[tuple[ModelSpec, Shipment]],
        repositories: Sequence[Shipment],
        driver_pid: int | None,
        app_name: str,
    ) -> None:
        home = default_home()
        self.models = [replace(spec, path=land(shipment, home)) for spec, shipment in models]
        # The replicas share Ray's proxies; one gRPC server per replica would fight over the port.
        self.settings = replace(settings, repositories=tuple(str(land(r, home)) for r in repositories),
                                grpc_port=None)
        self.driver_pid = driver_pid
        self.app_name = app_name

    def __serve_build_asgi_app__(self) -> ASGIApp:
        from onnxkit.serve.app import create_app, wrap
        from onnxkit.serve.kserve_grpc import Servicer

        app = create_app(self.settings, self.models)
        self.servicer = Servicer(app.state.onnxkit)
        # kept for asgi_call (not as self.app: serve.ingress defines that)
        # A replica's process is its own: its heap is settled once its models are loaded.
        self.onnxkit_app: ASGIApp = AfterStartup(
            ClusterHealth(wrap(app, self.settings), app_name=self.app_name, driver_pid=self.driver_pid), settle_heap
        )
        return self.onnxkit_app

    async def asgi_call(self, scope: Scope, body: bytes) -> AsyncIterator[list[Message]]:
        """One HTTP request in a single handle call from the proxy (``ray_front``): the same app, no call back."""
        async for messages in answer(self.onnxkit_app, scope, body):
            yield messages


def replica_states(app_name: str) -> tuple[str, dict[str, int]]:
    """The application's status and its replicas by state, from the Serve controller."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return "NOT_STARTED", {}
    states: dict[str, int] = {}
    for deployment in app.deployments.values():
        for state, count in deployment.replica_states.items():
            states[str(state)] = states.get(str(state), 0) + int(count)
    return str(app.status.value if hasattr(app.status, "value") else app.status), states


class ClusterHealth:
    """``/health`` answers for the whole deployment: ready only when every replica is.

    The replica that takes the request asks its own app (its models loaded?) and the Serve
    controller (every replica RUNNING, none starting or stopping); the body names the driver's pid,
    which ``onnxkit stop`` signals, and the replica's.
    """

    def __init__(self, app: ASGIApp, *, app_name: str, driver_pid: int | None) -> None:
        self.app = app
        self.app_name = app_name
        self.driver_pid = driver_pid

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/health":
            await self.app(scope, receive, send)
            return
        status, body = await _capture(self.app, scope, receive)
        try:
            app_status, replicas = await asyncio.to_thread(replica_states, self.app_name)
        except Exception as exc:  # the controller is away (restarting): not known to be ready
            app_status, replicas = f"unknown ({type(exc).__name__}: {exc})", {}
        every = app_status == "RUNNING" and bool(replicas) and set(replicas) == {"RUNNING"}
        if status == 200 and not every:
            status, body["status"] = 503, "loading"
        body.update(replica_pid=os.getpid(), replicas=replicas, ray_application=app_status,
                    ray_path="handle" if VIA in (scope.get("extensions") or {}) else "serve-http")
        if self.driver_pid is not None:
            body["pid"] = self.driver_pid
        raw = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
    status = 500
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, keep)
    body = json.loads(b"".join(chunks) or b"{}")
    return status, body if isinstance(body, dict) else {"status": "unknown"}


def threads_per_replica(settings: ServerSettings, cpus: int, scaling: Scaling) -> int:
    """onnxruntime threads per replica: the cluster's cores shared by the most replicas there can be."""
    return settings.threads or max(1, cpus // max(1, scaling.most))


def application(
    settings: ServerSettings,
    models: Sequence[ModelSpec],
    scaling: Scaling,
    *,
    cpus: int,
    transfer: str = "auto",
    driver_pid: int | None = None,
    app_name: str = APP_NAME,
) -> Any:
    """The Serve application (``Deployment.bind(...)``): what ``serve.run`` and a Serve config both take."""
    from pathlib import Path

    from ray import serve

    threads = threads_per_replica(settings, cpus, scaling)
    settings = replace(settings, threads=threads)
    shipped = [(spec, ship(spec.name, spec.path, transfer)) for spec in models]
    repositories = [ship(Path(r).name, Path(r), transfer) for r in settings.repositories]
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        # A replica reserves the cores its onnxruntime threads use (its share at most, so that an
        # explicit --threads never leaves replicas unplaceable), and Ray places them where they fit.
        "ray_actor_options": {"num_cpus": min(float(threads), cpus / scaling.most) if cpus else threads},
        # Many requests in flight per replica: its batchers merge them and bound their own queues (429).
        "max_ongoing_requests": 256,
        # Beyond that, each proxy queues this many for the deployment, then answers 429 as our queues do.
        "max_queued_requests": settings.max_queue,
        "backpressure_config": {"status_code": 429},
        # As the plain server gives requests in flight on stop (uvicorn's graceful shutdown).
        "graceful_shutdown_timeout_s": 10,
        # One access line per request: the app's own (--no-access-log turns it off), not Ray's too.
        "logging_config": QUIET_LOGS,
    }
    if scaling.replicas is None:
        options["autoscaling_config"] = {
            "min_replicas": 1,
            "initial_replicas": 1,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = scaling.replicas
    deployment = serve.deployment(**options)(serve.ingress()(OnnxkitReplica))
    return deployment.bind(settings, shipped, repositories, driver_pid, app_name)


BUILD_ARGS = {"models", "repository", "replicas", "max_replicas", "target_ongoing_requests", "settings",
              "model_transfer"}


def build(args: dict[str, Any]) -> Any:
    """``import_path: onnxkit.serve.ray_serve:build`` in a Serve config (``serve run``, KubeRay's RayService).

    ``args``: ``models`` (names or paths, as ``onnxkit serve`` takes them; default: the default models
    unless a ``repository`` is given), ``repository`` (folders), ``replicas`` (N or ``auto`` with
    ``max_replicas`` and ``target_ongoing_requests``), ``settings`` (``ServerSettings`` fields, e.g.
    ``threads``, ``max_batch_size``, ``api_key``). Models resolve on the node that builds the
    application and must be at the same path on every node (a shared volume): a Serve config has no
    driver to hold copies in the object store.
    """
    import dataclasses

    import ray

    from onnxkit.errors import InvalidRequest
    from onnxkit.serve.server import resolve_spec
    from onnxkit.settings import DEFAULT_MODELS

    unknown = set(args) - BUILD_ARGS
    if unknown:
        raise InvalidRequest(f"Serve config args {sorted(unknown)} are unknown; onnxkit takes {sorted(BUILD_ARGS)}")
    if args.get("model_transfer", "path") != "path":
        raise InvalidRequest("model_transfer: a Serve config deploys without an onnxkit driver to keep copies in "
                             "the object store; only 'path' (a path every node sees) works here")
    fields = {f.name for f in dataclasses.fields(ServerSettings)}
    overrides = dict(args.get("settings") or {})
    if set(overrides) - fields:
        raise InvalidRequest(f"settings {sorted(set(overrides) - fields)} are not ServerSettings fields "
                             f"({', '.join(sorted(fields))})")
    repositories = tuple(str(r) for r in args.get("repository") or ())
    settings = ServerSettings(**{**overrides, "repositories": repositories})
    names = args.get("models") or ([] if repositories else list(DEFAULT_MODELS))
    replicas = args.get("replicas", 1)
    if replicas == "auto":
        scaling = Scaling(replicas=None, max_replicas=int(args.get("max_replicas") or 1),
                          target_ongoing_requests=float(args.get("target_ongoing_requests", 8.0)))
    else:
        scaling = Scaling(replicas=int(replicas), max_replicas=int(replicas))
    cpus = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
    return application(settings, [resolve_spec(str(m)) for m in names], scaling, cpus=cpus, transfer="path")
