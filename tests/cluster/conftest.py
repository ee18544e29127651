"""The Ray tests' session fixture: one two-node cluster on 127.0.0.1 (see cluster_fixtures.py)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_fixtures import (
    HERE,
    OBJECT_STORE_BYTES,
    RAY,
    START_TIMEOUT,
    RayCluster,
    alive_nodes,
    free_port,
    stop_groups,
    wait_for,
)

import onnxkit
from onnxkit.serve.ray_cluster import FAST_SERVE


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    root = Path(tempfile.mkdtemp(prefix="okray-"))  # short: Ray's unix sockets live below it
    logs = root / "logs"
    logs.mkdir()
    src = str(Path(onnxkit.__file__).parents[1])  # the nodes import the onnxkit under test
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        # Both nodes are this machine: a proxy preferring "its" node's replica would leave the other idle.
        "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
        **FAST_SERVE,  # the Serve settings of onnxkit's private instance, as docs/scale-out.md advises
        "ONNXKIT_HOME": str(root / "home"),
    }
    temp = str(root / "ray")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (logs / "head.log").open("wb") as out:
            procs.append(subprocess.Popen(
                [RAY, "start", "--head", "--block", "--port", "0", "--node-ip-address", "127.0.0.1",
                 "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp,
                 "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                 "--object-store-memory", str(OBJECT_STORE_BYTES)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True))
        current = Path(temp) / "ray_current_cluster"
        address = wait_for("the head node did not start", lambda: current.is_file() and current.read_text().strip(),
                           START_TIMEOUT, logs)
        with (logs / "worker.log").open("wb") as out:
            procs.append(subprocess.Popen(
                [sys.executable, str(HERE / "worker_node.py"), address, temp, "1", str(OBJECT_STORE_BYTES)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True))
        wait_for("the worker node did not join", lambda: alive_nodes(address, env) == 2, START_TIMEOUT, logs)
        yield RayCluster(address=address, env=env, home=root / "home", serve_port=free_port(), logs=logs)
    finally:
        stop_groups(list(reversed(procs)))
        shutil.rmtree(root, ignore_errors=True)
