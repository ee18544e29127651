"""The process behind ``onnxkit serve --ray``: deploy, wait until every replica is ready, hold, tear down.

It stays up while the Serve application runs, as a plain ``onnxkit serve`` does, so ``--detach``,
``onnxkit stop`` (SIGTERM) and Ctrl-C behave the same: on the way out it deletes the application
(an existing cluster keeps running) or stops the private Ray instance it started.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from onnxkit.errors import OnnxkitError
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.ray_cluster import PROXY_CALLBACK, PROXY_CALLBACK_PATH, Cluster, connect, probe_host
from onnxkit.serve.ray_front import APP_NAME
from onnxkit.serve.ray_grpc import SERVICER_FUNCTION
from onnxkit.serve.ray_serve import QUIET_LOGS, Scaling, application, threads_per_replica
from onnxkit.settings import ServerSettings

UNREACHABLE_GRACE = 30.0  # seconds to wait for /health once Serve reports the application running
PROXY_HINT = "if Serve already ran on this cluster with other HTTP options, its proxies keep them"


def proxy_location(cluster: Cluster) -> str:
    # One proxy per node is Ray's default; nodes that share one address (one machine) cannot all
    # bind the same port, so there the head's proxy serves alone.
    return "EveryNode" if len(cluster.node_ips) > 1 else "HeadOnly"


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _accepts(host: str, port: int | None) -> bool:
    """Whether ``host:port`` takes a connection (None: no port to wait for)."""
    if port is None:
        return True
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def serve_on_ray(
    settings: ServerSettings,
    models: Sequence[ModelSpec],
    scaling: Scaling,
    *,
    address: str | None,
    transfer: str = "auto",
    ready: Callable[[str], None] = print,
    startup_timeout: float = 300.0,
) -> None:
    """Deploy ``models`` on Ray and block until SIGTERM/SIGINT; ``ready`` is told once all replicas are."""
    import os

    with connect(address) as cluster:
        from ray import serve

        if cluster.local and not _port_free(settings.host, settings.port):
            raise OnnxkitError(f"{settings.host}:{settings.port} is in use; pick another --port")
        grpc: dict[str, Any] = {}
        if settings.grpc_port is not None:
            grpc = {"port": settings.grpc_port, "grpc_servicer_functions": [SERVICER_FUNCTION]}
        # The controller's environment reaches the proxies it starts: they load ray_proxy's error shapes.
        # (Ignored by Ray when Serve already runs on the cluster: then the nodes' own environment counts.)
        controller = {"runtime_env": {"env_vars": {PROXY_CALLBACK: PROXY_CALLBACK_PATH}}}
        serve.start(http_options={"host": settings.host, "port": settings.port}, grpc_options=grpc or None,
                    proxy_location=proxy_location(cluster), logging_config=QUIET_LOGS,
                    controller_options=controller)
        app = application(settings, models, scaling, cpus=cluster.cpus, transfer=transfer,
                          driver_pid=os.getpid())
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            _deploy(app, settings, address, startup_timeout, stop, warn=ready)
            if stop.is_set():
                return  # stopped while deploying: torn down below, never announced
            threads = threads_per_replica(settings, cluster.cpus, scaling)
            count = (f"{scaling.replicas} replica(s)" if scaling.replicas
                     else f"1-{scaling.max_replicas} replicas (auto)")
            ready(f"serving {', '.join(m.name for m in models) or 'the repository'} on "
                  f"http://{settings.host}:{settings.port} through Ray Serve: {count}, {threads} thread(s) each, "
                  f"cluster {cluster.address} ({cluster.nodes} node(s), {cluster.cpus} CPUs)")
            stop.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
            _teardown(cluster)


def _deploy(app: Any, settings: ServerSettings, address: str | None, timeout: float, stop: threading.Event,
            warn: Callable[[str], None]) -> None:
    """``serve.run`` in a thread (so a deployment that never fits the cluster times out here), then ``/health``."""
    from ray import serve

    from onnxkit.serve.server import probe

    failure: list[BaseException] = []

    def run() -> None:
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except BaseException as exc:  # reported by the waiting thread
            failure.append(exc)

    runner = threading.Thread(target=run, name="onnxkit-ray-deploy", daemon=True)
    runner.start()
    host = probe_host(settings.host, address)
    deadline = time.monotonic() + timeout
    running_since: float | None = None  # when serve.run returned: every replica constructed
    while time.monotonic() < deadline and not stop.is_set():
        if failure:
            raise OnnxkitError(f"Ray Serve could not deploy onnxkit: {failure[0]}")
        if running_since is None and not runner.is_alive():
            running_since = time.monotonic()
        info = probe(host, settings.port) if running_since is not None else None
        # ready once HTTP answers and Serve's gRPC proxy, when asked for, listens (it starts later)
        if info and info.get("status") == "ok" and _accepts(host, settings.grpc_port):
            return
        if info and info.get("status") == "unavailable":
            reasons = "; ".join(f"{k}: {v}" for k, v in info.get("unavailable", {}).items())
            raise OnnxkitError(f"a model failed to load on a replica ({reasons})")
        if info is None and running_since is not None and time.monotonic() - running_since > UNREACHABLE_GRACE:
            # Serve says RUNNING but no onnxkit answers at host:port from here: a remote cluster whose
            # proxies bind loopback, or Serve started earlier with other HTTP options.
            warn(f"Ray Serve runs the application, but http://{host}:{settings.port}/health does not answer "
                 f"from this machine; {PROXY_HINT}")
            return
        time.sleep(0.25)
    if stop.is_set():
        return
    raise OnnxkitError(f"onnxkit was not ready on Ray after {timeout:.0f} s: {_status_message()}")


def _status_message() -> str:
    from ray import serve

    with contextlib.suppress(Exception):
        app = serve.status().applications.get(APP_NAME)
        if app is not None:
            parts = [app.message] + [d.message for d in app.deployments.values()]
            return f"application {app.status}; " + " ".join(p for p in parts if p)
    return f"Ray Serve's proxy does not answer; {PROXY_HINT}"


def _teardown(cluster: Cluster) -> None:
    from ray import serve

    with contextlib.suppress(Exception):
        if cluster.local:
            serve.shutdown()  # type: ignore[no-untyped-call]
        else:
            serve.delete(APP_NAME)
