"""Chat and completions: prompt → engine stream → text deltas with stop strings.

Stop strings are matched here, on decoded text, because onnxruntime-genai's CPU
engine (static batching) refuses them; a match cancels the request. Tools are
rendered into the prompt by ``tasks.tools``; grammars come from ``tasks.guidance``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from onnxkit.errors import InternalError, InvalidRequest, ModelUnavailable
from onnxkit.runtime.genai import Delta, GenaiEngine, Guidance, Sampling
from onnxkit.runtime.metrics import Recorder
from onnxkit.settings import Limits, ServerSettings
from onnxkit.tasks import tools as toolkit
from onnxkit.tasks.logprobs import Entry, TokenBytes
from onnxkit.tasks.messages import chat_template, check_message

T = TypeVar("T")

MAX_TOP_LOGPROBS = 20
SEED_RANGE = 2**31
# Text shorter than this is tokenized on the event loop; longer text in a worker thread.
ENCODE_INLINE = 16 * 1024


async def _sized(size: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, in a worker thread when ``size`` says the work is large."""
    return fn(*args) if size < ENCODE_INLINE else await asyncio.to_thread(fn, *args)


def check_stops(stops: Sequence[str], limits: Limits) -> list[str]:
    if len(stops) > limits.max_stop:
        raise InvalidRequest(
            f"stop has {len(stops)} strings; at most {limits.max_stop} (the server's --limit max_stop)", param="stop"
        )
    for i, s in enumerate(stops):
        if len(s) > limits.max_stop_chars:
            raise InvalidRequest(
                f"stop[{i}] has {len(s)} characters; at most {limits.max_stop_chars} "
                "(the server's --limit max_stop_chars)",
                param="stop",
            )
    return list(stops)


@dataclass(frozen=True)
class Piece:
    text: str
    finish: str | None = None  # set on the last piece: "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[Entry, ...] = ()  # the tokens this piece's text came from, when asked for


@dataclass(frozen=True)
class Defaults:
    temperature: float
    top_p: float | None
    top_k: int | None


class ChatModel:
    task = "chat"

    def __init__(self, name: str, version: str, path: Path, settings: ServerSettings, recorder: Recorder) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._recorder = recorder
        self.engine = GenaiEngine(
            path,
            max_batch_size=settings.max_concurrent_sequences,
            threads=settings.threads,
            max_queue=settings.max_queued_generations,
            gather_ms=settings.chat_gather_ms,
            on_finish=recorder.tokens,
            on_step=recorder.decode_step,
        )
        self.context_length = self.engine.context_length
        self.limits = settings.limits
        self.template_knows_tools = "tools" in chat_template(path)
        self.token_bytes = TokenBytes(path)
        genai_config = json.loads((path / "genai_config.json").read_text())
        self.vocab_size = int(genai_config.get("model", {}).get("vocab_size") or 2**31 - 1)
        search = genai_config.get("search", {})
        # Like vLLM, requests that leave sampling unset get the model's own defaults.
        sample = bool(search.get("do_sample", False))
        self.defaults = Defaults(
            temperature=float(search.get("temperature", 1.0)) if sample else 0.0,
            top_p=float(search["top_p"]) if sample and "top_p" in search else None,
            top_k=int(search["top_k"]) if sample and "top_k" in search else None,
        )

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)

    @property
    def guidance_error(self) -> str:
        """Why this model cannot constrain its output ("" when it can)."""
        return self.engine.guidance_error

    async def chat_prompt(
        self,
        messages: Sequence[dict[str, Any]],
        tools: toolkit.ToolUse | None = None,
        *,
        need_guidance: bool = True,
        generation_prompt: bool = True,
    ) -> list[int]:
        """The messages (and tools) through the chat template, tokenized (in a worker when long). Offering
        tools needs guidance (their calls are constrained), unless the prompt is only counted."""
        if not messages:
            raise InvalidRequest("messages is empty; expected at least one message", param="messages")
        checked = [check_message(m, i) for i, m in enumerate(messages)]
        if tools is not None and tools.active and need_guidance:
            self.require_guidance("tools")
        rendered, declared = toolkit.render(checked, tools, self.template_knows_tools)
        size = sum(len(m["content"]) for m in rendered) + (len(json.dumps(declared)) if declared else 0)
        return await _sized(size, self._render_and_encode, rendered, declared, generation_prompt)

    def _render_and_encode(
        self, rendered: list[dict[str, Any]], declared: list[dict[str, Any]] | None, generation_prompt: bool
    ) -> list[int]:
        try:
            text = self.engine.chat_prompt(rendered, declared, generation_prompt)
        except Exception as exc:  # the template raised (e.g. roles in an order it refuses)
            raise InvalidRequest(f"model {self.name!r}'s chat template refused the messages: {exc}",
                                 param="messages") from exc  # fmt: skip
        return self._ids(text, "messages")

    async def text_prompt(self, text: str, param: str = "prompt") -> list[int]:
        """A completion prompt, tokenized (in a worker when long)."""
        return await _sized(len(text), self._ids, text, param)

    def _ids(self, text: str, param: str) -> list[int]:
        ids = self.engine.encode(text)
        if not ids:
            raise InvalidRequest(f"{param} is empty: it holds no tokens; send some text", param=param)
        return ids

    def require_guidance(self, feature: str) -> None:
        if self.guidance_error:
            raise InvalidRequest(
                f"{feature} needs constrained decoding, which model {self.name!r} cannot do here: "
                f"{self.guidance_error}; install an onnxruntime-genai build with guidance (the PyPI wheel has it)",
                param=feature,
            )

    def sampling(
        self,
        prompt: list[int],
        *,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        top_k: int | None,
        seed: int | None,
        min_tokens: int | None = None,
        repetition_penalty: float | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        logprobs: int | None = None,
        guidance: Guidance | None = None,
    ) -> Sampling:
        room = self.context_length - len(prompt)
        if room <= 0:
            raise InvalidRequest(
                f"the prompt has {len(prompt)} tokens; model {self.name!r} has a context length of "
                f"{self.context_length}, leaving no room to generate",
                param="messages",
                code="context_length_exceeded",
            )
        if max_tokens is not None and max_tokens < 1:
            raise InvalidRequest(f"max_tokens is {max_tokens}; expected at least 1", param="max_tokens")
        if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequest(
                f"top_logprobs is {logprobs}; expected 0 to {MAX_TOP_LOGPROBS}", param="top_logprobs"
            )
        if repetition_penalty is not None and not repetition_penalty > 0:
            raise InvalidRequest(
                f"repetition_penalty is {repetition_penalty}; expected a number above 0 (1 is none)",
                param="repetition_penalty",
            )
        if guidance is not None:
            self.require_guidance("response_format")
        sample = temperature if temperature is not None else self.defaults.temperature
        most = min(max_tokens or room, room)  # clamped to the context
        if min_tokens is not None and not 0 <= min_tokens <= most:
            raise InvalidRequest(
                f"min_tokens is {min_tokens}; expected 0 to {most} (max_tokens, or the room left in the context)",
                param="min_tokens",
            )
        return Sampling(
            max_new_tokens=most,
            min_new_tokens=min_tokens or 0,
            temperature=sample,
            top_p=top_p if top_p is not None else self.defaults.top_p,
            # a top_k past the vocabulary keeps every token: the same as none (the runtime refuses it)
            top_k=min(top_k, self.vocab_size) if top_k is not None else self.defaults.top_k,
            # onnxruntime-genai takes a 32-bit seed; OpenAI's is 64-bit: the same seed always maps alike
            seed=None if seed is None else seed % SEED_RANGE,
            repetition_penalty=repetition_penalty,
            frequency_penalty=frequency_penalty or 0.0,
            presence_penalty=presence_penalty or 0.0,
            logprobs=logprobs,
            guidance=guidance,
        )

    async def generate(
        self,
        jobs: Sequence[tuple[list[int], Sampling]],
        stop: Sequence[str],
        enough: Callable[[int], bool] | None = None,
    ) -> AsyncGenerator[tuple[int, Piece], None]:
        """One request's generations (its prompts and ``n`` choices), as ``(index, piece)`` in the order the
        pieces come; each index's last piece carries its finish reason and usage. All are admitted or none
        (a 429 leaves nothing running), and leaving early cancels every one still running. A grammar that
        does not compile raises InvalidRequest before any piece. ``enough(i)``, asked after each piece the
        caller has taken, ends generation ``i`` there (finish "stop"): e.g. a model repeating a tool call."""
        deltas: asyncio.Queue[Delta] = asyncio.Queue()
        streams = self.engine.submit(jobs, deltas)
        matchers = [StopMatcher(stop) for _ in streams]
        pending: list[list[Entry]] = [[] for _ in streams]  # logprobs of tokens whose text is held back
        live = set(range(len(streams)))
        started = time.perf_counter()
        try:
            while live:
                delta = await deltas.get()
                i = delta.index
                if i not in live:
                    continue  # what a stream stopped on a stop string still had in flight
                stream = streams[i]
                if delta.finish is None:
                    if delta.logprob is not None and delta.token is not None:
                        pending[i].append(self.token_bytes.entry(delta.token, delta.logprob))
                    text, hit = matchers[i].feed(delta.text)
                    if hit:
                        self.engine.cancel(stream)
                        live.discard(i)
                        self._recorder.request(True, time.perf_counter() - started)
                        yield i, Piece(text, "stop", len(stream.prompt), stream.generated, _take(pending, i))
                    elif text or pending[i]:
                        yield i, Piece(text, logprobs=_take(pending, i))
                        if enough is not None and enough(i):
                            self.engine.cancel(stream)
                            live.discard(i)
                            self._recorder.request(True, time.perf_counter() - started)
                            yield i, Piece("", "stop", len(stream.prompt), stream.generated)
                    continue
                live.discard(i)
                if delta.finish == "invalid":
                    self._recorder.request(False, time.perf_counter() - started)
                    raise InvalidRequest(delta.text, param="response_format")
                ok = delta.finish in ("stop", "length")
                self._recorder.request(ok, time.perf_counter() - started)
                if delta.finish == "unloaded":
                    raise ModelUnavailable(f"model {self.name!r} was unloaded while generating; retry")
                if not ok:
                    raise InternalError(f"generation failed on model {self.name!r}: {delta.text or delta.finish}")
                prompt_tokens = delta.prompt_tokens or len(stream.prompt)
                text = matchers[i].flush()
                yield i, Piece(text, delta.finish, prompt_tokens, delta.generated_tokens, _take(pending, i))
        finally:
            for i in live:  # the client went away, or another generation failed
                self.engine.cancel(streams[i])
                self._recorder.request(False, time.perf_counter() - started)


class StopMatcher:
    """Holds back text that could be the start of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""
        self.sent = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        self.text += piece
        if not self.stops:
            out, self.sent = self.text[self.sent :], len(self.text)
            return out, False
        start = max(0, self.sent - max(len(s) for s in self.stops))
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            cut = min(hits)
            out = self.text[self.sent : cut]
            self.sent = len(self.text)
            return out, True
        safe = len(self.text) - self._held()
        out = self.text[self.sent : max(self.sent, safe)]
        self.sent = max(self.sent, safe)
        return out, False

    def _held(self) -> int:
        longest = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    longest = max(longest, k)
                    break
        return longest

    def flush(self) -> str:
        out, self.sent = self.text[self.sent :], len(self.text)
        return out


def _take(pending: list[list[Entry]], i: int) -> tuple[Entry, ...]:
    out, pending[i] = tuple(pending[i]), []
    return out
