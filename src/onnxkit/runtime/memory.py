"""The serving process's memory: malloc settings (glibc), so that its RSS follows what it holds, and a
heap settled after start-up, so that Python's full collections do not stall the event loop.

A server's large buffers come and go with the load: KV caches per generation, batches of tensors,
parsed request bodies, each in whichever thread ran it. glibc's defaults keep them after they are
freed: up to 8 arenas per core, and a mmap threshold that rises to the largest freed block (32 MiB
at most), after which blocks of that size come from an arena and stay there once freed. Under a
soak that mixes sizes, RSS then climbs in steps that never come back.

``tune_malloc`` caps the arenas at two and fixes the mmap threshold at 1 MiB: a block that large is
its own mapping and goes back to the system when freed (a page-fault cost per such allocation, small
next to the work that needs 1 MiB). A setting the user gave in the environment (``MALLOC_ARENA_MAX``,
``MALLOC_MMAP_THRESHOLD_``) is left as given. Only ``onnxkit serve``'s own process calls this; an
application that embeds ``Server`` keeps its own malloc settings.

Start-up leaves tens of thousands of long-lived objects (modules, tokenizers, the app): ~85k with the
default models. Python's full (generation 2) collection walks all of them each time it runs: ~50 ms
here, holding the GIL, so the event loop answers nothing meanwhile. ``settle_heap`` collects once and
then freezes what survived (``gc.freeze``): later full collections walk only what was made after
start-up. Frozen objects are never collected; they are the ones that live as long as the process.
Only a process that is the server's own settles its heap (``onnxkit serve``, a Ray replica), once
its models are loaded (a hook of ``serve.middleware.AfterStartup``).
"""

from __future__ import annotations

import ctypes
import gc
import os

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENA_MAX = 2
MMAP_THRESHOLD = 1 << 20


def tune_malloc() -> dict[str, int]:
    """Apply the settings above where glibc is the allocator; returns what was set (empty elsewhere)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): its own defaults stay
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied: dict[str, int] = {}
    for env, param, value in (("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
                              ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD)):  # fmt: skip
        if env not in os.environ and mallopt(param, value) == 1:
            applied[env] = value
    return applied


def settle_heap() -> int:
    """Collect, then move every surviving object out of the collector's sight; returns how many."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
