"""The session's Ray cluster, and the helpers the Ray tests share.

A real two-node Ray cluster on 127.0.0.1, started once per test session and always torn down.

Head: ``ray start --head --port 0 --node-ip-address 127.0.0.1 --num-cpus 1 --include-dashboard false
--block``. Worker: ``worker_node.py`` (why not ``ray start --address``: see its docstring), one CPU.
Every Ray server binds 127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), except the ports Ray
Serve 2.60 hard-codes on every interface (each replica's internal gRPC port, the gRPC proxy), and
token authentication with a token made for this session guards the cluster. Each node runs in a
process group of its own, which teardown stops (SIGTERM, then SIGKILL after a bounded wait).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

HERE = Path(__file__).parent
RAY = str(Path(sys.executable).with_name("ray"))
START_TIMEOUT = 120.0
OBJECT_STORE_BYTES = 256 * 1024 * 1024
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RayCluster:
    address: str  # the GCS, as `--ray ADDRESS` takes it
    env: dict[str, str]  # what a driver on this machine needs (the session's token, loopback addresses)
    home: Path  # ONNXKIT_HOME of the nodes and of the drivers the tests start
    serve_port: int  # Ray Serve's HTTP proxy port on this cluster: Serve keeps the first one it is given
    logs: Path

    def shutdown_serve(self) -> None:
        """Shut Ray Serve down on the cluster, whatever started it. A Serve left running keeps the options it
        was started with (no gRPC proxy, no onnxkit error shapes in its proxy) for the next ``serve --ray``,
        and an application left on it keeps both CPUs, so every later test would wait out its timeout."""
        code = (f"import ray\nfrom ray import serve\nray.init(address={self.address!r}, log_to_driver=False)\n"
                "serve.shutdown()\n")
        subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, timeout=120, check=False)

    def onnxkit(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "onnxkit", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)


def wait_for(what: str, check: Callable[[], T | None], timeout: float, logs: Path) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.glob("*.log")))
    raise TimeoutError(f"{what} within {timeout:.0f} s\n{tails}")


def alive_nodes(address: str, env: dict[str, str]) -> int:
    done = subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    active = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return len(re.findall(r"\bnode_[0-9a-f]+", active))


def stop_groups(procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM each node's launcher, then SIGKILL whatever is left in their process groups."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group was made for this node (start_new_session)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
