"""onnxruntime-genai: one engine thread per chat model.

The thread owns an ``og.Engine`` (requests decode together in batches: statically
on CPU, continuously where the model has paged attention) and steps it while any
request is pending, handing tokens to asyncio through ``call_soon_threadsafe``.

On CPU the engine batches statically, and there per-turn seeds are refused
("A per-turn seed requires an Engine configured for dynamic batching"); its events
carry no logits either. Seeded sampling, logprobs and OpenAI's additive penalties
therefore run on their own ``og.Generator`` (``runtime.solo``) stepped in the same
loop, one token per iteration, interleaved with the engine's steps. Grammars
(llguidance) and the repetition penalty are per-turn options the CPU engine
accepts, so constrained requests stay in its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import InternalError, MissingDependency, ModelUnavailable, Overloaded
from onnxkit.runtime.solo import (
    GrammarError,
    Guidance,
    Sampling,
    SoloDecoder,
    TokenLogprob,
    guidance_probe,
    is_grammar_error,
)

# onnxruntime-genai's static scheduler (CPU) runs at most 4 requests in a batch, whatever
# engine.static_batching.max_batch_size says (that sizes only its sampler), and admits no one until
# the batch is done. So when an idle engine gets a request, the thread waits for the rest of a burst
# while requests keep arriving less than ``gather_ms`` apart (3x that at most) before the first step.
STATIC_BATCH = 4

try:
    import onnxruntime_genai as og
except ImportError:  # optional extra
    og = None


__all__ = ["Delta", "GenaiEngine", "Guidance", "Sampling", "Stream", "TokenLogprob"]


@dataclass(frozen=True)
class Delta:
    index: int  # which of a request's generations (its ``n`` choices, its prompts) it belongs to
    text: str
    token: int | None
    # "stop" | "length" | "cancelled" | "error" | "unloaded" | "invalid" (a grammar that did not compile)
    finish: str | None = None
    prompt_tokens: int = 0
    generated_tokens: int = 0
    logprob: TokenLogprob | None = None  # when the sampling asked for logprobs


@dataclass(eq=False)
class Stream:
    """One generation as seen from asyncio; the generations of one request share a queue."""

    index: int
    prompt: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    deltas: asyncio.Queue[Delta]
    generated: int = 0
    # engine-thread side
    request: Any = None
    turn: int = 0
    solo: SoloDecoder | None = None
    detok: Any = None
    done: bool = False


class GenaiEngine:
    def __init__(
        self,
        path: Path,
        *,
        max_batch_size: int = 8,
        threads: int = 0,
        max_queue: int = 256,
        gather_ms: float = 10.0,
        on_finish: Callable[[int, int], None] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        if og is None:
            raise MissingDependency("onnxruntime-genai", "genai")
        config = og.Config(str(path))
        overlay: dict[str, Any] = {"engine": {"static_batching": {"max_batch_size": max_batch_size}}}
        if threads:
            overlay["model"] = {
                "decoder": {"session_options": {"intra_op_num_threads": threads, "inter_op_num_threads": 1}}
            }
        config.overlay(json.dumps(overlay))
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        self._buffer_size = max(64, 4 * max_batch_size)
        genai_cfg = json.loads((path / "genai_config.json").read_text())
        # The engine refuses sessions longer than search.max_length (the KV-cache size the model
        # was built for), which may be below the architecture's context_length.
        limits = [genai_cfg["model"].get("context_length"), genai_cfg["search"].get("max_length")]
        self.context_length = min(int(x) for x in limits if x)
        self.eos_ids = {int(t) for t in self.tokenizer.eos_token_ids}
        self.max_queue = max_queue
        self._gather_gap = max(0.0, gather_ms) / 1000.0
        self._on_finish = on_finish  # (prompt tokens, generated tokens), as the engine really ran them
        self._on_step = on_step  # sequences one engine step advanced
        self._inbox: queue.SimpleQueue[tuple[str, Stream | None]] = queue.SimpleQueue()
        self._by_request: dict[int, Stream] = {}
        self._solo: list[Stream] = []
        self.guidance_error = ""  # why this build cannot constrain decoding, if it cannot (probed at start)
        self._closed = False
        # The engine may only be used from the thread that created it.
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"genai:{path.name}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise InternalError(f"cannot start the generation engine for {path}: {self._failure}")

    # ---- called from asyncio -------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(text)]

    def chat_prompt(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, generation_prompt: bool = True
    ) -> str:
        extra: dict[str, Any] = {"tools": json.dumps(tools)} if tools else {}
        extra["add_generation_prompt"] = generation_prompt
        return str(self.tokenizer.apply_chat_template(json.dumps(messages), **extra))

    def submit(self, jobs: Sequence[tuple[list[int], Sampling]], deltas: asyncio.Queue[Delta]) -> list[Stream]:
        """All of one request's generations, or none of them: a request refused leaves nothing running."""
        if self._closed:
            raise ModelUnavailable("the model is being unloaded; retry")
        waiting = self._inbox.qsize()  # not yet taken up by the engine thread
        if waiting + len(jobs) > self.max_queue:
            raise Overloaded(
                f"{waiting} generations are queued and this request adds {len(jobs)}; the limit is "
                f"{self.max_queue}. Retry later"
            )
        loop = asyncio.get_running_loop()
        streams = [Stream(i, prompt, sampling, loop, deltas) for i, (prompt, sampling) in enumerate(jobs)]
        for stream in streams:
            self._inbox.put(("add", stream))
        return streams

    def cancel(self, stream: Stream) -> None:
        self._inbox.put(("cancel", stream))

    def close(self) -> None:
        self._closed = True
        self._inbox.put(("close", None))
        self._thread.join(timeout=10)

    # ---- the engine thread ---------------------------------------------------
    def _main(self) -> None:
        try:
            self.guidance_error = guidance_probe(og, self.model, self.encode("Answer with one letter:"))
            self.engine = og.Engine(self.model)
            self.events = self.engine.create_event_buffer(self._buffer_size)
        except Exception as exc:
            self._failure = exc
            return
        finally:
            self._ready.set()
        self._loop()
        # Closed (the model is unloaded): every stream still running, or still in the inbox, ends now.
        while True:
            try:
                kind, stream = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "add" and stream is not None:
                self._finish(stream, "unloaded")
        for stream in [*self._by_request.values(), *self._solo]:
            self._finish(stream, "unloaded")
        del self.events, self.engine  # released on their owner thread

    def _loop(self) -> None:
        while not self._closed:
            idle = not (self.engine.has_pending_requests() or self._solo)
            added = self._take(block=idle)
            if added is None:
                return
            # A static batch admits nobody until it finishes: let the rest of a burst join it.
            if idle and added and self._gather_gap and not self._gather(added):
                return
            try:
                if self.engine.has_pending_requests():
                    self._step_engine()
                for stream in list(self._solo):
                    self._step_solo(stream)
            except Exception as exc:  # the engine failed: fail every live stream, keep serving
                for stream in [*self._by_request.values(), *self._solo]:
                    self._finish(stream, "error", error=str(exc))

    def _take(self, block: bool, timeout: float | None = None) -> int | None:
        """Handle what is in the inbox (waiting for one message if ``block``): requests added, or None on close."""
        added = 0
        try:
            while True:
                kind, stream = self._inbox.get(block=block, timeout=timeout)
                block = False
                if stream is None:
                    return None
                if kind == "add":
                    self._start(stream)
                    added += 1
                else:
                    self._cancel(stream)
        except queue.Empty:
            return added

    def _gather(self, added: int) -> bool:
        """Take requests while they keep arriving (``gather_ms`` apart, 3x that in all) until a batch is full."""
        deadline = time.perf_counter() + 3 * self._gather_gap
        while added < STATIC_BATCH:
            wait = min(self._gather_gap, deadline - time.perf_counter())
            if wait <= 0:
                return True
            more = self._take(block=True, timeout=wait)
            if more is None:
                return False
            if more == 0:
                return True
            added += more
        return True

    def _start(self, stream: Stream) -> None:
        s = stream.sampling
        stream.detok = self.tokenizer.create_stream()
        try:
            if s.solo:
                stream.solo = SoloDecoder(og, self.model, stream.prompt, s)
                self._solo.append(stream)
            else:
                self._begin_turn(stream)
        except Exception as exc:
            if isinstance(exc, GrammarError) or (s.guidance is not None and is_grammar_error(exc)):
                said = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:600]
                self._finish(stream, "invalid", error=f"the grammar did not compile: {said or type(exc).__name__}")
            else:
                self._finish(stream, "error", error=str(exc))

    def _begin_turn(self, stream: Stream) -> None:
        s = stream.sampling
        options = og.RequestOptions()
        options.set_max_session_tokens(len(stream.prompt) + s.max_new_tokens)
        request = self.engine.create_request(options=options)
        try:
            turn = og.TurnOptions(request)
            turn.set_max_generated_tokens(s.max_new_tokens)
            if s.min_new_tokens:
                turn.set_min_generated_tokens(s.min_new_tokens)
            if s.greedy:
                turn.set_do_sample(False)
                turn.set_temperature(0.0)
            else:
                turn.set_do_sample(True)
                turn.set_temperature(s.temperature)
                turn.set_top_k(s.top_k or 0)
                if s.top_p is not None:
                    turn.set_top_p(s.top_p)
            if s.repetition_penalty is not None:
                turn.set_repetition_penalty(s.repetition_penalty)
            if s.guidance is not None:
                turn.set_guidance(s.guidance.kind, s.guidance.data)
            stream.turn = request.begin_turn(np.asarray(stream.prompt, dtype=np.int32), turn)
        except Exception:
            with contextlib.suppress(Exception):
                request.close()
            raise
        stream.request = request
        self._by_request[id(request)] = stream

    def _cancel(self, stream: Stream) -> None:
        if stream.done:
            return
        if stream.request is not None:
            stream.request.cancel_turn(stream.turn)  # TURN_FINISHED(CANCELLED) follows
        else:
            self._finish(stream, "cancelled")

    def _step_engine(self) -> None:
        stepped = 0
        for ev in self.engine.run(self.events):
            flags = int(ev.flags)
            if flags & int(og.EngineEventFlags.TOKEN):
                stepped += 1
            stream = self._by_request.get(id(ev.request))
            if stream is None:
                continue
            if flags & int(og.EngineEventFlags.TOKEN) and ev.token is not None:
                self._emit(stream, int(ev.token))
            if flags & int(og.EngineEventFlags.FAILED):
                self._finish(stream, "error", error=f"generation failed ({ev.error_code})")
            elif flags & int(og.EngineEventFlags.TURN_FINISHED):
                self._finish(stream, _finish_reason(ev.finish_reason))
        if stepped and self._on_step is not None:
            self._on_step(stepped)

    def _step_solo(self, stream: Stream) -> None:
        assert stream.solo is not None
        token, logprob = stream.solo.step()
        if token in self.eos_ids:
            self._finish(stream, "stop")
            return
        self._emit(stream, token, logprob)
        if stream.generated >= stream.sampling.max_new_tokens or stream.solo.done():
            self._finish(stream, "length")

    def _emit(self, stream: Stream, token: int, logprob: TokenLogprob | None = None) -> None:
        if stream.done or token in self.eos_ids:
            return
        stream.generated += 1
        text = stream.detok.decode(token)
        _post(stream, Delta(stream.index, text, token, logprob=logprob))

    def _finish(self, stream: Stream, reason: str, error: str = "") -> None:
        if stream.done:
            return
        stream.done = True
        if stream.request is not None:
            self._by_request.pop(id(stream.request), None)
            with contextlib.suppress(Exception):
                stream.request.close()
            stream.request = None
        if stream in self._solo:
            self._solo.remove(stream)
            stream.solo = None
        if self._on_finish is not None:
            self._on_finish(len(stream.prompt), stream.generated)
        _post(stream, Delta(stream.index, error, None, reason, len(stream.prompt), stream.generated))


def _post(stream: Stream, delta: Delta) -> None:
    # A loop that has closed has nobody left to read (e.g. the last words of a cancelled stream):
    # the engine thread must not die of it.
    with contextlib.suppress(RuntimeError):
        stream.loop.call_soon_threadsafe(stream.deltas.put_nowait, delta)


def _finish_reason(reason: Any) -> str:
    name = str(getattr(reason, "name", reason))
    if name in ("MAX_GENERATED_TOKENS", "MAX_SESSION_TOKENS"):
        return "length"
    if name == "CANCELLED":
        return "cancelled"
    if name == "FAILED":
        return "error"
    return "stop"

