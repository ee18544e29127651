"""Joining a Ray cluster, or starting a private one on 127.0.0.1, for ``--ray`` (serve and predict).

Ray is imported here and only here on the driver side, and only when ``--ray`` was given: the plain
server never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from onnxkit.errors import InvalidRequest, MissingDependency, OnnxkitError

# Ray resolves 127.0.0.1 to the machine's routable address (and then binds its servers on every
# interface) unless this is 0; with it, a node whose address is loopback binds loopback only.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray Serve's HTTP proxies import this callback at start-up (see serve/ray_proxy.py).
PROXY_CALLBACK = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK_PATH = "onnxkit.serve.ray_proxy.middlewares"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# Ray Serve settings the private instance runs with (bench/bench_ray.py: about 30 % less latency
# added by the proxy): the proxy reaches replicas over gRPC, its router shares the proxy's event loop,
# and the app runs on the replica's loop (it never blocks it: model work runs in threads).
FAST_SERVE = {
    "RAY_SERVE_PROXY_USE_GRPC": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # Over gRPC, an answer larger than this (4 MiB by Ray's default) failed on Ray's own path: 2000
    # embeddings are 9 MB. gRPC's own ceiling; the answers are the app's own.
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(2**31 - 1),
}


@dataclass(frozen=True)
class Cluster:
    """Where the driver is connected."""

    address: str  # what the user gave, or "local" for the private instance
    local: bool  # onnxkit started this instance and stops it on exit
    cpus: int  # CPUs in the whole cluster, as Ray counts them
    nodes: int
    node_ips: tuple[str, ...]


def _import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as exc:
        if exc.name == "ray":
            raise MissingDependency("ray", "ray") from exc
        raise
    return ray


def is_loopback(address: str | None) -> bool:
    if address is None or address == "local":
        return True
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS


def probe_host(bind_host: str, address: str | None) -> str:
    """Where this machine reaches a proxy bound to ``bind_host``: the head node, for a cluster elsewhere."""
    if address not in (None, "local", "auto") and not is_loopback(address):
        return str(address).removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind_host, bind_host)


def check_address(address: str) -> None:
    """``--ray ADDRESS`` must look like an address, so a model named after ``--ray`` is not taken for one."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address in ("local", "auto") or (host and port.isdigit()):
        return
    raise InvalidRequest(f"--ray {address!r} is not a Ray address: expected auto, HOST:PORT or ray://HOST:PORT. "
                         "Name models before --ray (onnxkit serve MODEL --ray), or write --ray=ADDRESS")


def prepare_environment(address: str | None) -> None:
    """Set what Ray reads at import and what the processes it starts inherit; the user's values win.

    Called before ``import ray``: Ray reads these once, when its modules load.
    """
    env = os.environ
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault(PROXY_CALLBACK, PROXY_CALLBACK_PATH)
    if is_loopback(address):
        env.setdefault(LOOPBACK_ONLY, "0")
    if address is None:  # the private instance's processes inherit this environment
        for key, value in FAST_SERVE.items():
            env.setdefault(key, value)


@contextlib.contextmanager
def connect(address: str | None, *, log_to_driver: bool = False) -> Iterator[Cluster]:
    """Connect to ``address`` (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``), or start a private instance.

    A private instance binds 127.0.0.1, starts no dashboard, and is torn down on exit; an existing
    cluster is only disconnected from.
    """
    prepare_environment(address)
    ray = _import_ray()
    if ray.is_initialized():
        raise OnnxkitError("Ray is already initialised in this process; onnxkit connects once per run")
    local = address is None
    try:
        if local:
            ray.init(address="local", include_dashboard=False, log_to_driver=log_to_driver,
                     logging_level=logging.WARNING, _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, log_to_driver=log_to_driver, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise OnnxkitError(f"cannot connect to the Ray cluster at {address!r} ({exc}); start one with "
                           "`ray start --head` or leave out the address for a private local instance") from exc
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = int(ray.cluster_resources().get("CPU", 0))
        ips = tuple(sorted({str(n.get("NodeManagerAddress", "")) for n in nodes}))
        yield Cluster(address=address or "local", local=local, cpus=cpus, nodes=len(nodes), node_ips=ips)
    finally:
        ray.shutdown()
