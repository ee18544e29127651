"""Dynamic batching: one asyncio task per model owning a bounded queue.

The task collects requests until the batch is full (by a cost, e.g. number of
texts) or the oldest request has waited ``max_delay_ms``, runs the batch in a
worker thread, and resolves each request's future. Requests cancelled while
queued are skipped; a full queue answers ``Overloaded`` (429) instead of growing.
Items may carry a group key: only items with the same key are batched together
(tensors whose shapes cannot be padded together). A merged batch that fails is run again
item by item, so that only the request that caused the failure fails: one bad item never
costs the requests it was merged with.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from onnxkit.errors import ModelUnavailable, Overloaded

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    cost: int
    key: Hashable
    enqueued: float = field(default_factory=time.perf_counter)


class Placement:
    """Where the next run goes: on the event loop while recent runs took under ``inline_below_s``,
    otherwise in a worker thread (whose hop costs ~60 us, more than a tiny model's whole run).

    Runs are timed where they run. A run in a thread still looks slower than it is: returning from
    onnxruntime waits for the GIL, which the event loop holds for up to Python's 5 ms switch
    interval. So while threaded runs stay under ``PROBE_BELOW_S``, every ``PROBE_EVERY``-th run goes
    inline to measure again; otherwise a small model, once in threads, would stay there.
    """

    PROBE_BELOW_S = 0.004
    PROBE_EVERY = 16

    def __init__(self, inline_below_s: float) -> None:
        self.inline_below = inline_below_s
        self._recent: float | None = None  # moving average of recent runs' seconds
        self._threaded = 0  # runs in threads since the last inline one

    def inline(self) -> bool:
        recent = self._recent
        if recent is None or self.inline_below <= 0:
            return False
        if recent < self.inline_below:
            return True
        return recent < self.PROBE_BELOW_S and self._threaded >= self.PROBE_EVERY

    async def run(self, fn: Callable[[A], R], arg: A) -> tuple[R, float]:
        """``fn(arg)`` where the rule says, and the seconds it took there (recorded for the next choice)."""
        inline = self.inline()
        result, seconds = _timed(fn, arg) if inline else await asyncio.to_thread(_timed, fn, arg)
        self.record(seconds, inline)
        return result, seconds

    def record(self, seconds: float, inline: bool) -> None:
        if inline:
            self._threaded = 0
            # an inline run measures the true cost: it replaces what threaded runs suggested
            self._recent = seconds if self._recent is None or self._recent >= self.inline_below else (
                0.8 * self._recent + 0.2 * seconds)
        else:
            self._threaded += 1
            self._recent = seconds if self._recent is None else 0.8 * self._recent + 0.2 * seconds


def _timed(fn: Callable[[A], R], arg: A) -> tuple[R, float]:
    # Timed where it runs, not around the worker-thread hop (see Placement).
    t0 = time.perf_counter()
    result = fn(arg)
    return result, time.perf_counter() - t0


@dataclass(frozen=True)
class BatchStats:
    size: int  # requests in the batch
    cost: int  # summed cost (e.g. rows)
    queue_seconds: list[float]
    compute_seconds: float


class Batcher(Generic[T, R]):
    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        name: str,
        max_batch_cost: int,
        max_delay_ms: float,
        max_queue: int,
        cost: Callable[[T], int] = lambda _: 1,
        key: Callable[[T], Hashable] = lambda _: None,
        on_batch: Callable[[BatchStats], None] | None = None,
        inline_below_ms: float = 0.0,
        settle: bool = False,
    ) -> None:
        self._run_batch = run_batch
        self.name = name
        self.max_batch_cost = max(1, max_batch_cost)
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self._cost = cost
        self._key = key
        self._on_batch = on_batch
        # settle: the window closes after max_delay with no new arrival (at most 4x max_delay),
        # so a burst of requests lands in one batch; otherwise max_delay after the oldest arrival.
        self._settle = settle
        self._last_arrival = 0.0
        self._free_since = 0.0
        # Batches that recently took less than this run on the event loop. 0 keeps every batch in a thread.
        self.placement = Placement(inline_below_ms / 1000.0)
        self._queue: collections.deque[_Pending[T, R]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher:{self.name}")

    async def submit(self, item: T) -> R:
        if self._closed:
            raise ModelUnavailable(f"model {self.name!r} is shutting down")
        self.start()
        if len(self._queue) >= self.max_queue:
            raise Overloaded(
                f"model {self.name!r} has {len(self._queue)} requests queued (the limit); retry later"
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        pending = _Pending(item, future, max(1, self._cost(item)), self._key(item))
        self._queue.append(pending)
        self._last_arrival = pending.enqueued
        self._wakeup.set()
        return await future

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _take(self) -> list[_Pending[T, R]]:
        """Pop a batch: same key as the oldest live request, up to the cost budget."""
        while self._queue and self._queue[0].future.cancelled():
            self._queue.popleft()
        if not self._queue:
            return []
        key = self._queue[0].key
        batch: list[_Pending[T, R]] = []
        total = 0
        kept: collections.deque[_Pending[T, R]] = collections.deque()
        while self._queue:
            p = self._queue.popleft()
            if p.future.cancelled():
                continue
            if p.key != key or (batch and total + p.cost > self.max_batch_cost):
                kept.append(p)
                continue
            batch.append(p)
            total += p.cost
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def _budget_ready(self) -> bool:
        key = self._queue[0].key
        return sum(p.cost for p in self._queue if p.key == key) >= self.max_batch_cost

    async def _loop(self) -> None:
        while not self._closed:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # settle: a window opens when the batcher is free, not when the oldest request came,
            # so requests answered by the last batch can send again and join this one.
            first = max(self._queue[0].enqueued, self._free_since) if self._settle else self._queue[0].enqueued
            deadline = first + self.max_delay
            while not self._budget_ready():
                if self._settle:
                    deadline = min(first + 4 * self.max_delay, self._last_arrival + self.max_delay)
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            await self._run(batch)
            self._free_since = time.perf_counter()

    async def _run(self, batch: list[_Pending[T, R]]) -> None:
        started = time.perf_counter()
        items = [p.item for p in batch]
        results, compute = await self.placement.run(self._apart_on_failure, items)
        for p, r in zip(batch, results, strict=True):
            if p.future.done():
                continue
            if isinstance(r, BaseException):  # one item's own failure (e.g. input too long)
                p.future.set_exception(r)
            else:
                p.future.set_result(r)
        if self._on_batch:
            self._on_batch(
                BatchStats(
                    size=len(batch),
                    cost=sum(p.cost for p in batch),
                    queue_seconds=[started - p.enqueued for p in batch],
                    compute_seconds=compute,
                )
            )

    def _apart_on_failure(self, items: list[T]) -> Sequence[R | BaseException]:
        """The batch's results; if the merged run fails, each item run alone (its own result or error)."""
        try:
            return self._run_batch(items)
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        out: list[R | BaseException] = []
        for item in items:
            try:
                out.extend(self._run_batch([item]))
            except Exception as exc:
                out.append(exc)
        return out

    async def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(ModelUnavailable(f"model {self.name!r} was unloaded"))
        self._queue.clear()
