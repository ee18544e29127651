"""Triton's statistics extension for one model version, counted in-process.

Per request (as Triton counts): ``success`` / ``fail`` with the end-to-end time, ``queue``, and
the compute phases of the batch it ran in (each request counts its batch's durations). Per
runtime call: ``execution_count``, ``inference_count`` (rows) and the phases by batch size.
Callers record on the event loop; the lock keeps a report whole should one record from a thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from onnxkit.types import JSON


class InferenceStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_inference_ms = 0
        self.inference_count = 0
        self.execution_count = 0
        # [count, ns] pairs
        self.success = [0, 0]
        self.fail = [0, 0]
        self.queue = [0, 0]
        self.compute_input = [0, 0]
        self.compute_infer = [0, 0]
        self.compute_output = [0, 0]
        self.batches: dict[int, list[int]] = {}  # rows -> [executions, input ns, infer ns, output ns]

    def request(self, ok: bool, seconds: float) -> None:
        ns = int(seconds * 1e9)
        with self._lock:
            target = self.success if ok else self.fail
            target[0] += 1
            target[1] += ns
            if ok:
                self.last_inference_ms = time.time_ns() // 1_000_000

    def execution(self, rows: int, queue_seconds: Sequence[float], phases: tuple[float, float, float]) -> None:
        """One runtime call of ``rows`` rows for ``len(queue_seconds)`` requests; phases in seconds."""
        n = len(queue_seconds)
        ns_in, ns_infer, ns_out = (int(p * 1e9) for p in phases)
        with self._lock:
            self.execution_count += 1
            self.inference_count += rows
            self.queue[0] += n
            self.queue[1] += int(sum(queue_seconds) * 1e9)
            for target, ns in ((self.compute_input, ns_in), (self.compute_infer, ns_infer),
                               (self.compute_output, ns_out)):  # fmt: skip
                target[0] += n
                target[1] += n * ns
            batch = self.batches.setdefault(rows, [0, 0, 0, 0])
            batch[0] += 1
            batch[1] += ns_in
            batch[2] += ns_infer
            batch[3] += ns_out

    def report(self, name: str, version: str) -> JSON:
        """Triton's ``$model_stat`` (REST JSON; gRPC parses the same dict into ModelStatistics)."""

        def duration(pair: list[int]) -> JSON:
            return {"count": pair[0], "ns": pair[1]}

        with self._lock:
            return {
                "name": name,
                "version": version,
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": duration(self.success),
                    "fail": duration(self.fail),
                    "queue": duration(self.queue),
                    "compute_input": duration(self.compute_input),
                    "compute_infer": duration(self.compute_infer),
                    "compute_output": duration(self.compute_output),
                    "cache_hit": duration([0, 0]),
                    "cache_miss": duration([0, 0]),
                },
                "batch_stats": [
                    {
                        "batch_size": rows,
                        "compute_input": duration([b[0], b[1]]),
                        "compute_infer": duration([b[0], b[2]]),
                        "compute_output": duration([b[0], b[3]]),
                    }
                    for rows, b in sorted(self.batches.items())
                ],
            }
