"""A server on the tiny models, a tensor repository and gRPC, with small bounds, for the hardening tests.

Every test here sends a bad request and, alongside it, an innocent one; ``Probe`` checks that the
innocent one succeeds and that /health stays fast while the bad one is handled.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import httpx
import numpy as np
import onnx
import psutil
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.settings import Limits

LIMITS = Limits(
    max_inputs=64, max_request_tokens=2048, max_generations=8, max_pairs=64, max_stop=4, max_stop_chars=32,
    max_tensor_elements=100_000, max_dims=8,
)  # fmt: skip
BODY_LIMIT = 1024 * 1024
HEALTH_MS = 100.0


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_repository(root: Path) -> Path:
    """mlp: x FP32 [N, 4] -> y [N, 3]; pad: x FP32 [N, L] -> y = 2x (pad_variable_dims, batched 50 ms);
    words: text BYTES [N] -> same (TF-Serving strings)."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    _save(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "w")],
    ), root / "mlp" / "1" / "model.onnx")  # fmt: skip
    _save(helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L"])],
    ), root / "pad" / "1" / "model.onnx")  # fmt: skip
    (root / "pad" / "config.yaml").write_text(
        "max_batch_size: 8\ndynamic_batching: {max_queue_delay_ms: 50, pad_variable_dims: true}\n"
    )
    _save(helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])], "words",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["N"])],
    ), root / "words" / "1" / "model.onnx")  # fmt: skip
    return root


@dataclass
class Served:
    """An ``onnxkit serve`` process: where it answers, its pid (for its memory) and its log."""

    url: str
    grpc_port: int
    pid: int
    log: Path

    @property
    def address(self) -> tuple[str, int]:
        """(host, port), for a raw socket."""
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="package")
def hard_server(
    tiny_chat_model: Path,
    tiny_embed_model: Path,
    task_exports: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """The real ``onnxkit serve`` in its own process, as users run it.

    Not a ``Server`` thread in this process: pytest's heap here holds ~900k objects by the time these
    tests run, and a full collection of it (~0.5 s, holding the GIL) would stall an in-process server's
    event loop and be read as the server's fault.
    """
    root = tmp_path_factory.mktemp("hard")
    repo = write_repository(root / "repo")
    links = root / "models"
    links.mkdir()
    for name, path in {"tiny-chat": tiny_chat_model, "tiny-embed": tiny_embed_model, **task_exports}.items():
        (links / name).symlink_to(path, target_is_directory=True)
    port, grpc_port = free_port(), free_port()
    limits = [a for f in fields(LIMITS) for a in ("--limit", f"{f.name}={getattr(LIMITS, f.name)}")]
    cmd = [sys.executable, "-m", "onnxkit", "serve", *sorted(str(m) for m in links.iterdir()),
           "--repository", str(repo), "--port", str(port), "--grpc-port", str(grpc_port), *limits,
           "--max-body-bytes", str(BODY_LIMIT), "--max-batch-delay-ms", "30", "--no-access-log"]  # fmt: skip
    with serve_process(cmd, root, port, grpc_port) as served:
        yield served


@contextlib.contextmanager
def serve_process(
    cmd: list[str], root: Path, port: int, grpc_port: int = 0, preexec_fn: Callable[[], None] | None = None
) -> Iterator[Served]:
    """``cmd`` (an ``onnxkit serve`` on ``port``) in its own process, its output in ``root/server.log``,
    until it answers /health; stopped (SIGTERM, then SIGKILL) on exit."""
    log = root / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, "ONNXKIT_HOME": str(root / "home")}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _healthy(url):
            assert proc.poll() is None, f"onnxkit serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"onnxkit serve not ready in 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield Served(url, grpc_port, proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        return False


@dataclass
class Probe:
    """While a bad request runs: an innocent request sent alongside, and /health polled every 10 ms."""

    url: str
    health_ms: list[float]
    innocent_status: int = 0


# The /health poller runs in its own process, so that what it measures is the server, not this process's
# test threads.
# SIGTERM only ends the loop, so that the last line is never cut in half.
POLLER = """
import signal, sys, time, httpx
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
with httpx.Client(base_url=sys.argv[1], timeout=10) as c:
    c.get("/health")  # the connection is made before timing starts
    print("ready", flush=True)
    while not stop:
        t0 = time.perf_counter()
        status = c.get("/health").status_code
        print(status, (time.perf_counter() - t0) * 1000, flush=True)
        time.sleep(0.01)
"""


@pytest.fixture
def alongside(hard_server: Served) -> Callable[..., Probe]:
    def run(bad: Callable[[], object], innocent: Callable[[], httpx.Response] | None = None) -> Probe:
        probe = Probe(hard_server.url, [])
        poller = subprocess.Popen([sys.executable, "-c", POLLER, hard_server.url], stdout=subprocess.PIPE, text=True)
        assert poller.stdout is not None and poller.stdout.readline().strip() == "ready"

        def good() -> None:
            if innocent is not None:
                probe.innocent_status = innocent().status_code

        helper = threading.Thread(target=good)
        helper.start()
        try:
            bad()
        finally:
            helper.join(timeout=60)
            time.sleep(0.05)
            poller.terminate()
            out, _ = poller.communicate(timeout=30)
        samples = [line.split() for line in out.splitlines() if line.strip()]
        assert all(status == "200" for status, _ in samples), samples
        probe.health_ms = [float(ms) for _, ms in samples]
        if innocent is not None:
            assert probe.innocent_status == 200, "the innocent request sent alongside failed"
        assert probe.health_ms, "/health was never answered"
        assert max(probe.health_ms) < HEALTH_MS, f"/health took {max(probe.health_ms):.0f} ms"
        return probe

    return run


def rss_mb(served: Served) -> float:
    """The server process's resident memory."""
    return float(psutil.Process(served.pid).memory_info().rss) / 2**20


def error_of(r: httpx.Response) -> str:
    body = r.json()
    err = body["error"]
    return str(err["message"] if isinstance(err, dict) else err)
