"""onnxkit serve's process memory: a large block freed in a worker thread goes back to the system, and the
heap that start-up leaves is frozen, so that full collections stay short."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PATTERN = r"""
import ctypes, json, sys, threading
import psutil
from onnxkit.runtime.memory import tune_malloc
applied = tune_malloc() if sys.argv[1] == "tuned" else {}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p; libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]; libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
out = {"applied": applied}
def work():
    # A request's buffers: 2 MiB blocks among small allocations that outlive them, in a worker thread.
    b = libc.malloc(2 << 20); libc.free(b)
    base = psutil.Process().memory_info().rss
    big, small = [], []
    for _ in range(50):
        b = libc.malloc(2 << 20); libc.memset(b, 1, 2 << 20); big.append(b)
        s = libc.malloc(256); libc.memset(s, 1, 256); small.append(s)
    for b in big:
        libc.free(b)
    out["held_mib"] = (psutil.Process().memory_info().rss - base) / 2**20
t = threading.Thread(target=work); t.start(); t.join()
print(json.dumps(out))
"""

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


def run(mode: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, timeout=60,
                          env={**clean, **env}, check=True)  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout)
    return result


@glibc
def test_freed_large_blocks_leave_the_process() -> None:
    control = run("default")
    if float(control["held_mib"]) < 30:  # type: ignore[arg-type]
        pytest.skip(f"this allocator returns such blocks by itself (held {control['held_mib']} MiB)")
    tuned = run("tuned")
    assert tuned["applied"] == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 1 << 20}
    assert float(tuned["held_mib"]) < 10, tuned  # type: ignore[arg-type]


@glibc
def test_settings_given_in_the_environment_are_kept() -> None:
    tuned = run("tuned", MALLOC_ARENA_MAX="4")
    assert tuned["applied"] == {"MALLOC_MMAP_THRESHOLD_": 1 << 20}


SETTLE = r"""
import gc, json, time
from onnxkit.runtime.memory import settle_heap
gc.disable()
kept = [{"i": i, "next": [i]} for i in range(300_000)]  # long-lived, like what start-up leaves
def full() -> float:
    t0 = time.perf_counter(); gc.collect(); return time.perf_counter() - t0
before = min(full() for _ in range(3))
frozen = settle_heap()
after = min(full() for _ in range(3))
print(json.dumps({"before": before, "after": after, "frozen": frozen}))
"""


def test_settling_the_heap_takes_start_ups_objects_out_of_full_collections() -> None:
    done = subprocess.run([sys.executable, "-c", SETTLE], capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(done.stdout)
    assert out["frozen"] >= 600_000, out
    assert out["after"] < out["before"] / 5, out


LIFESPAN = r"""
import asyncio, gc, json
from onnxkit.runtime.memory import settle_heap
from onnxkit.serve.middleware import AfterStartup
seen = {}
async def app(scope, receive, send):
    assert (await receive())["type"] == "lifespan.startup"
    seen["while_starting"] = gc.get_freeze_count()
    await send({"type": "lifespan.startup.complete"})
async def main():
    async def receive():
        return {"type": "lifespan.startup"}
    async def send(message):
        seen["when_sent"] = gc.get_freeze_count()
    await AfterStartup(app, settle_heap)({"type": "lifespan"}, receive, send)
asyncio.run(main())
print(json.dumps(seen))
"""


def test_the_heap_is_settled_when_start_up_completes_not_before() -> None:
    done = subprocess.run([sys.executable, "-c", LIFESPAN], capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(done.stdout)
    assert seen["while_starting"] == 0 and seen["when_sent"] > 1000, seen


SERVE = r"""
import gc, os, signal, sys, threading, time, httpx
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import serve_forever
from onnxkit.settings import ServerSettings
port, model = int(sys.argv[1]), sys.argv[2]
def watch() -> None:
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json().get("status") == "ok":
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    print("frozen", gc.get_freeze_count(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=watch, daemon=True).start()
serve_forever(ServerSettings(host="127.0.0.1", port=port, access_log=False), [ModelSpec("embed", model)])
"""


def test_onnxkit_serve_settles_its_heap_once_its_models_are_loaded(tiny_embed_model: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-c", SERVE, str(port), str(tiny_embed_model)], capture_output=True,
                          text=True, timeout=180, check=False)  # fmt: skip
    frozen = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("frozen")]
    assert frozen, done.stdout + done.stderr
    assert frozen[0] > 10_000, "the serving process did not freeze its start-up heap"
