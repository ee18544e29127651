"""onnxkit serve --detach / onnxkit stop, as a user runs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
