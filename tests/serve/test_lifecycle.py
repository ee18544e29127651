"""onnxkit serve --detach / onnxkit stop, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def next_line(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """The process's next stdout line, failing (not hanging) when none comes within ``timeout``."""
    assert proc.stdout is not None
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    assert got, f"no line printed within {timeout:.0f} s"
    return got[0]


def onnxkit(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONNXKIT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "onnxkit", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_detach_then_noop_then_stop(tiny_embed_model: Path, tmp_path: Path) -> None:
    port = str(free_port())
    first = onnxkit("serve", str(tiny_embed_model), "--port", port, "--detach", home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "ready" in first.stdout
    try:
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["status"] == "ok"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "paris"})
        assert r.status_code == 200

        again = onnxkit("serve", str(tiny_embed_model), "--port", port, "--detach", home=tmp_path)
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["pid"] == health["pid"]  # the same server
    finally:
        stop = onnxkit("stop", "--port", port, home=tmp_path)
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")
    assert "no onnxkit server" in onnxkit("stop", "--port", port, home=tmp_path).stdout


def test_server_context_manager(tiny_embed_model: Path) -> None:
    import onnxkit

    with onnxkit.Server(models=[tiny_embed_model], port=0) as s:
        assert httpx.get(s.url + "/health").status_code == 200
        url = s.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health")


def test_detach_reports_a_model_that_cannot_load(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not an onnx model")
    port = str(free_port())
    r = onnxkit("serve", str(bad), "--port", port, "--detach", home=tmp_path)
    assert r.returncode == 1
    assert "broken" in r.stderr and "failed to load" in r.stderr, r.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")


def test_port_0_serves_on_free_ports_that_the_start_and_ready_lines_name(
    tiny_embed_model: Path, tmp_path: Path
) -> None:
    import tritonclient.grpc as grpcclient

    env = {**os.environ, "ONNXKIT_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "onnxkit", "serve", str(tiny_embed_model), "--port", "0",
                             "--grpc-port", "0", "--no-access-log"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        line = next_line(proc)  # printed before the models load
        match = re.search(r" on http://127\.0\.0\.1:(\d+) and gRPC on a free port;", line)
        assert match and match.group(1) != "0", line
        port = match.group(1)
        ready = next_line(proc)  # printed once they are loaded and gRPC listens
        match = re.fullmatch(rf"ready on http://127\.0\.0\.1:{port} and gRPC on 127\.0\.0\.1:(\d+)\n", ready)
        assert match and match.group(1) != "0", ready
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] == "ok"
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{match.group(1)}")
        assert client.is_server_live() and client.is_model_ready(tiny_embed_model.name)
        client.close()
        stop = onnxkit("stop", "--port", port, home=tmp_path)  # the pid file names the real port
        assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr
        assert proc.wait(timeout=60) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_ready_line_names_a_model_that_did_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not an onnx model")
    env = {**os.environ, "ONNXKIT_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "onnxkit", "serve", str(bad), "--port", "0", "--no-access-log"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        next_line(proc)
        line = next_line(proc)
        assert line.startswith("started on http://127.0.0.1:") and "but not ready (broken: " in line, line
        assert line.rstrip().endswith("/health"), line
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_port_0_is_refused_with_detach(tiny_embed_model: Path, tmp_path: Path) -> None:
    r = onnxkit("serve", str(tiny_embed_model), "--port", "0", "--detach", home=tmp_path)
    assert r.returncode == 1 and "--port 0" in r.stderr and "--detach" in r.stderr, r.stderr


def test_a_port_in_use_is_named(tiny_embed_model: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = onnxkit("serve", str(tiny_embed_model), "--port", port, home=tmp_path)
    assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr


@pytest.mark.parametrize("record", [
    lambda pid: {"pid": pid, "started": 1.0, "host": "127.0.0.1"},  # a server that started long ago had this pid
    lambda pid: {"pid": pid, "host": "127.0.0.1"},  # an older pid file, without a start time
    lambda pid: "{\"pid\": ",  # cut short
])  # fmt: skip
def test_stop_never_signals_a_process_that_reused_a_dead_servers_pid(
    tmp_path: Path, record: Callable[[int], object]
) -> None:
    # The server on this port died without removing its pid file, and the system gave its pid to
    # another process: `onnxkit stop` must call the file stale, not send that process SIGTERM.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        port = free_port()
        run = tmp_path / "run"
        run.mkdir()
        content = record(other.pid)
        (run / f"server-{port}.json").write_text(content if isinstance(content, str) else json.dumps(content))
        r = onnxkit("stop", "--port", str(port), home=tmp_path)
        assert r.returncode == 0 and "stale pid file" in r.stdout, r.stdout + r.stderr
        assert other.poll() is None, "onnxkit stop signalled a process that is not its server"
        assert not (run / f"server-{port}.json").exists()
    finally:
        other.kill()
        other.wait()
