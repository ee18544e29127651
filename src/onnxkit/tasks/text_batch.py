"""Token sequences through a graph: sorted by length, run in chunks, padded per chunk.

Padding, not batch size, is the cost on CPU; both text task models (embeddings, classify/QA) run
their merged batches through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from onnxkit.types import IntArray

X = TypeVar("X")
Y = TypeVar("Y")
R = TypeVar("R")


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


def run_sorted(
    groups: Sequence[list[X] | BaseException],
    *,
    length: Callable[[X], int],
    chunk: int,
    run_chunk: Callable[[list[X]], Sequence[Y]],
    build: Callable[[list[X], list[Y]], R],
) -> list[R | BaseException]:
    """Each request's items (or its own error) → one result per request.

    All items of all requests are sorted by length together and run ``chunk`` at a time; ``build``
    puts each request's results back together in its own order. A request's error passes through.
    """
    flat = [x for g in groups if not isinstance(g, BaseException) for x in g]
    order = sorted(range(len(flat)), key=lambda i: length(flat[i]))
    results: dict[int, Y] = {}
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        results.update(zip(idx, run_chunk([flat[i] for i in idx]), strict=True))
    out: list[R | BaseException] = []
    at = 0
    for g in groups:
        if isinstance(g, BaseException):
            out.append(g)
            continue
        out.append(build(g, [results[i] for i in range(at, at + len(g))]))
        at += len(g)
    return out
