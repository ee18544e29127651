"""Running the app: in the foreground, in a thread (``onnxkit.Server``), or detached.

A detached server writes ``$ONNXKIT_HOME/run/server-<port>.json`` (pid, url);
``onnxkit stop`` reads it and sends SIGTERM, which uvicorn turns into a graceful
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil
import uvicorn
from fastapi import FastAPI

from onnxkit.errors import InvalidRequest, OnnxkitError
from onnxkit.runtime.memory import settle_heap
from onnxkit.serve.app import ModelSpec, create_app, wrap
from onnxkit.serve.connections import timed_http
from onnxkit.serve.middleware import AfterStartup
from onnxkit.serve.state import AppState
from onnxkit.settings import ServerSettings


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it
    # a response written as headers + body waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(
    settings: ServerSettings,
    models: Sequence[ModelSpec],
    app: FastAPI | None = None,
    *,
    own_process: bool = False,
    ready: Callable[[AppState], None] | None = None,
) -> uvicorn.Config:
    """``own_process``: the process is the server's (``onnxkit serve``), so its heap is settled after
    start-up; then ``ready`` is called with the state (where gRPC listens, the models' health)."""
    app = app or create_app(settings, models)
    state: AppState = app.state.onnxkit
    hooks: list[Callable[[], object]] = [settle_heap] if own_process else []
    if ready is not None:
        hooks.append(lambda: ready(state))
    asgi = wrap(app, settings)
    return uvicorn.Config(
        AfterStartup(asgi, *hooks) if hooks else asgi,
        http=timed_http(settings.request_timeout_s),  # each request's headers on time (serve.connections)
        log_level="warning",
        access_log=False,  # onnxkit's own access log middleware writes one line per request
        timeout_graceful_shutdown=10,
        lifespan="on",
    )


def serve_forever(
    settings: ServerSettings,
    models: Sequence[ModelSpec],
    sock: socket.socket | None = None,
    ready: Callable[[AppState], None] | None = None,
) -> None:
    """The foreground server of ``onnxkit serve``: this process is the server's own. ``sock``: already
    bound; ``ready``: called once start-up completes."""
    sock = sock or bind(settings.host, settings.port)
    uvicorn.Server(uvicorn_config(settings, models, own_process=True, ready=ready)).run(sockets=[sock])


class Server:
    """An onnxkit server in a background thread, for tests and notebooks.

    >>> with Server(models=["all-minilm-l6-v2"], port=0) as s:
    ...     print(s.url)

    ``port=0`` (and ``grpc_port=0``) pick free ports; ``port`` and ``grpc_port`` say which.
    """

    def __init__(
        self,
        models: Sequence[str | Path | ModelSpec] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        settings: ServerSettings | None = None,
        startup_timeout: float = 600.0,
        **overrides: Any,
    ) -> None:
        base = settings or ServerSettings()
        self.settings = ServerSettings(**{**base.__dict__, "host": host, "port": port, **overrides})
        self.models = [m if isinstance(m, ModelSpec) else resolve_spec(str(m)) for m in models]
        self.startup_timeout = startup_timeout
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._state: AppState | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._sock is not None, "the server is not started"
        return int(self._sock.getsockname()[1])

    @property
    def grpc_port(self) -> int | None:
        """The port gRPC listens on, once started; None when gRPC is off."""
        assert self._state is not None, "the server is not started"
        return self._state.grpc_port

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def start(self) -> Server:
        self._sock = bind(self.settings.host, self.settings.port)
        app = create_app(self.settings, self.models)
        self._state = app.state.onnxkit
        self._server = uvicorn.Server(uvicorn_config(self.settings, self.models, app))
        sock = self._sock

        def run() -> None:
            asyncio.run(self._server.serve(sockets=[sock]))  # type: ignore[union-attr]

        self._thread = threading.Thread(target=run, name="onnxkit-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise OnnxkitError("the server stopped during start-up; see the log above")
            if time.monotonic() > deadline:
                self.stop()
                raise OnnxkitError(f"the server was not ready after {self.startup_timeout:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def resolve_spec(spec: str) -> ModelSpec:
    """A catalog name, URL, hf: id, folder or .onnx file → what the server loads.

    A model that is not on disk yet is pulled by a child ``onnxkit pull`` (its progress shown here):
    building a catalog model needs torch and transformers, which the serving process never imports.
    """
    from onnxkit.models.cache import Cache
    from onnxkit.models.supply import model_name, resolve, spec_kind
    from onnxkit.settings import default_home

    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix != ".onnx":
            raise InvalidRequest(f"{path} is a file but not a .onnx model; expected a .onnx file or a folder")
        return ModelSpec(name=path.stem if path.is_file() else path.name, path=path)
    cache = Cache(default_home())
    name = model_name(spec)
    cached = cache.get(name)
    if cached is None:
        if spec_kind(spec) == "name":
            resolve(spec, cache)  # not a path, not cached, not in the catalog: raises naming the known models
        _pull_in_child(spec)
        cached = cache.get(name)
        if cached is None:
            raise OnnxkitError(f"`onnxkit pull {spec}` finished but {name!r} is not in the cache {cache.root}")
    return ModelSpec(name=cached.name, path=cached.path)


def _pull_in_child(spec: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "onnxkit", "pull", spec], stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise OnnxkitError(f"could not get model {spec!r}: `onnxkit pull {spec}` failed (exit {done.returncode})")


# ---- detached servers ---------------------------------------------------------


def run_dir() -> Path:
    from onnxkit.settings import default_home

    path = default_home() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pidfile(port: int) -> Path:
    return run_dir() / f"server-{port}.json"


def probe(host: str, port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    """What an onnxkit server on host:port says about itself, or None if none answers."""
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/health"
    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return None
    with contextlib.suppress(ValueError):
        body = r.json()
        if isinstance(body, dict) and body.get("server") == "onnxkit":
            return body
    return None


def write_pidfile(settings: ServerSettings) -> Path:
    """``started`` (the process's start time) tells this server from a later process given its pid."""
    path = pidfile(settings.port)
    started = psutil.Process().create_time()
    path.write_text(json.dumps({"pid": os.getpid(), "started": started, "host": settings.host, "port": settings.port}))
    return path


def stop_server(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> str:
    info = probe(host, port)
    path = pidfile(port)
    pid = int(info["pid"]) if info and "pid" in info else None
    if pid is None and path.is_file():
        record = _read_pidfile(path)
        pid = record.get("pid") if isinstance(record.get("pid"), int) else None
        if pid is None or not _ours(pid, record):
            path.unlink(missing_ok=True)
            return f"no onnxkit server is running on port {port} (removed a stale pid file)"
    if pid is None:
        return f"no onnxkit server is running on {host}:{port}"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        raise OnnxkitError(f"onnxkit server (pid {pid}) did not stop within {timeout:.0f} s")
    path.unlink(missing_ok=True)
    return f"stopped the onnxkit server on port {port} (pid {pid})"


def _read_pidfile(path: Path) -> dict[str, Any]:
    """The pid file's record; an empty one where it is not JSON (cut short by a crash): stale."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _ours(pid: int, record: dict[str, Any]) -> bool:
    """Whether ``pid`` is still the server its pid file names, not a later process that was given its
    pid (pids are reused): same start time, or, in a pid file written without one, onnxkit's command line."""
    if not _alive(pid):
        return False
    try:
        process = psutil.Process(pid)
        if "started" in record:
            return abs(process.create_time() - float(record["started"])) < 0.5
        return "onnxkit" in " ".join(process.cmdline())
    except (psutil.Error, ValueError, TypeError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (reaped later by its parent) counts as stopped
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    return True
