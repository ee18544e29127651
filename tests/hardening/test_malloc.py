"""onnxkit serve's malloc settings: a large block freed in a worker thread goes back to the system."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


def run(mode: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, timeout=60,
                          env={**clean, **env}, check=True)  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_freed_large_blocks_leave_the_process() -> None:
    control = run("default")
    if float(control["held_mib"]) < 30:  # type: ignore[arg-type]
        pytest.skip(f"this allocator returns such blocks by itself (held {control['held_mib']} MiB)")
    tuned = run("tuned")
    assert tuned["applied"] == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 1 << 20}
    assert float(tuned["held_mib"]) < 10, tuned  # type: ignore[arg-type]


def test_settings_given_in_the_environment_are_kept() -> None:
    tuned = run("tuned", MALLOC_ARENA_MAX="4")
    assert tuned["applied"] == {"MALLOC_MMAP_THRESHOLD_": 1 << 20}
