"""Token sequences through a graph: sorted by length, run in chunks, padded per chunk.

Padding, not batch size, is the cost on CPU; both text task models (embeddings, classify/QA) run
their merged batches through here. Chunks are not a fixed size: ``plan_chunks`` cuts the sorted
sequences where the padding a longer neighbour would add costs more than one more run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from tokenizers import Tokenizer

from onnxkit.errors import SupplyError
from onnxkit.runtime.batching import Batcher
from onnxkit.runtime.metrics import Recorder
from onnxkit.settings import ServerSettings
from onnxkit.types import IntArray

X = TypeVar("X")
Y = TypeVar("Y")
R = TypeVar("R")


def load_tokenizer(path: Path, what: str) -> Tokenizer:
    """The folder's tokenizer.json, padding off (each chunk is padded to its own longest sequence)."""
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise SupplyError(f"{what} has no tokenizer.json in {path}")
    tokenizer = Tokenizer.from_file(str(tok_file))
    tokenizer.no_padding()
    return tokenizer


def text_batcher(
    run: Callable[[list[X]], Sequence[Y | BaseException]],
    cost: Callable[[X], int],
    name: str,
    settings: ServerSettings,
    recorder: Recorder,
) -> Batcher[X, Y]:
    """A text model's batcher: up to 16 chunks merged, so that sorting by length has something to sort."""
    return Batcher(
        run,
        name=name,
        max_batch_cost=max(1, settings.max_batch_size) * 16,
        max_delay_ms=settings.max_batch_delay_ms,
        max_queue=settings.max_queue,
        cost=cost,
        settle=True,
        on_batch=recorder.on_batch,
    )


def pad(
    seqs: Sequence[Sequence[int]], pad_id: int, type_ids: Sequence[Sequence[int]] | None = None
) -> dict[str, IntArray]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids``, padded to the longest sequence."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    types = np.zeros((len(seqs), width), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
        mask[row, : len(s)] = 1
        if type_ids is not None:
            types[row, : len(s)] = type_ids[row]
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


# What one more onnxruntime run costs, in padded token slots: its fixed cost over the cost of a token.
# Measured with MiniLM on 2 cores (1.5-2 ms per run against 0.11-0.16 ms per token); the plan is not
# sensitive to it within a factor of two.
RUN_OVERHEAD_TOKENS = 24


def plan_chunks(lengths: Sequence[int], max_rows: int, overhead: float = RUN_OVERHEAD_TOKENS) -> list[int]:
    """Where to cut ascending ``lengths`` into chunks of at most ``max_rows``: the end index of each chunk.

    A chunk of rows ``i..j-1`` costs ``overhead + (j - i) * lengths[j - 1]`` (every row is padded to
    the last, longest one); the plan minimises the sum by dynamic programming, O(n * max_rows).
    """
    n = len(lengths)
    max_rows = max(1, max_rows)
    best = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        lo = max(0, j - max_rows)
        starts = np.arange(lo, j)
        costs = best[lo:j] + overhead + (j - starts) * lengths[j - 1]
        k = int(np.argmin(costs))
        best[j], start[j] = costs[k], lo + k
    ends: list[int] = []
    j = n
    while j > 0:
        ends.append(j)
        j = int(start[j])
    return ends[::-1]


def run_sorted(
    groups: Sequence[list[X] | BaseException],
    *,
    length: Callable[[X], int],
    chunk: int,
    run_chunk: Callable[[list[X]], Sequence[Y]],
    build: Callable[[list[X], list[Y]], R],
) -> list[R | BaseException]:
    """Each request's items (or its own error) → one result per request.

    All items of all requests are sorted by length together and run in chunks of at most ``chunk``
    rows, cut by ``plan_chunks``; ``build`` puts each request's results back together in its own
    order. A request's error passes through.
    """
    flat = [x for g in groups if not isinstance(g, BaseException) for x in g]
    order = sorted(range(len(flat)), key=lambda i: length(flat[i]))
    results: dict[int, Y] = {}
    begin = 0
    for end in plan_chunks([length(flat[i]) for i in order], chunk):
        idx = order[begin:end]
        results.update(zip(idx, run_chunk([flat[i] for i in idx]), strict=True))
        begin = end
    out: list[R | BaseException] = []
    at = 0
    for g in groups:
        if isinstance(g, BaseException):
            out.append(g)
            continue
        out.append(build(g, [results[i] for i in range(at, at + len(g))]))
        at += len(g)
    return out
