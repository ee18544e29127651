"""``onnxkit serve --ray`` with no address: a private Ray instance on 127.0.0.1, no dashboard, gone on stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
from cluster_fixtures import free_port

LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def onnxkit(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONNXKIT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "onnxkit", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped
    except psutil.NoSuchProcess:
        return True


def listening(procs: list[psutil.Process]) -> list[tuple[str, str, int]]:
    found = []
    for proc in procs:
        try:
            name = " ".join(proc.cmdline())[:80] or proc.name()
            found += [(name, c.laddr.ip, c.laddr.port) for c in proc.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    return found


def test_private_instance_binds_loopback_serves_and_stops_with_everything(
    tiny_embed_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    started = onnxkit("serve", str(tiny_embed_model), "--ray", "--port", str(port), "--detach", home=tmp_path)
    assert started.returncode == 0, started.stderr + started.stdout
    url = f"http://127.0.0.1:{port}"
    driver = None
    try:
        health = httpx.get(url + "/health", timeout=10).json()
        assert health["status"] == "ok" and health["replicas"] == {"RUNNING": 1}
        driver = psutil.Process(int(health["pid"]))
        ray_procs = driver.children(recursive=True)
        assert any("raylet" in " ".join(p.cmdline()) for p in ray_procs)  # the instance is the driver's own
        sockets = listening(ray_procs)
        assert (port in {p for _, _, p in sockets}) and 8265 not in {p for _, _, p in sockets}  # no dashboard
        # Every Ray server listens on loopback, except what Ray Serve 2.60 binds on every interface
        # itself: each replica's internal gRPC server ("[::]:0" in ray/serve/_private/replica.py).
        wide = [(name, ip, p) for name, ip, p in sockets if ip not in LOOPBACK]
        assert all("ServeReplica" in name for name, _, _ in wide), wide
        r = httpx.post(url + "/v1/embeddings", json={"input": "a text"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 32
    finally:
        stopped = onnxkit("stop", "--port", str(port), home=tmp_path)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert driver is not None and gone(driver)
    assert all(gone(p) for p in ray_procs)
