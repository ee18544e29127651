"""A graph with a tokenizer: text (pairs) in, graph output rows out, dynamically batched.

The base of the encoder task models (classification, question answering). Requests go through a
``Batcher``; inside a merged batch the sequences are sorted by length and run in the chunks
``text_batch.plan_chunks`` cuts, as for embeddings. The model shares its version's session and
recorder with the version's ``TensorModel``, so KServe v2 / TF-Serving keep serving the raw graph.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding

from onnxkit.errors import InvalidRequest, PayloadTooLarge
from onnxkit.export.card import read_card
from onnxkit.runtime.batching import Batcher
from onnxkit.runtime.metrics import Recorder
from onnxkit.runtime.ort import OrtSession
from onnxkit.settings import ServerSettings
from onnxkit.tasks.text_batch import load_tokenizer, pad, run_sorted, text_batcher
from onnxkit.types import Array, FloatArray

Pair = tuple[str, str | None]
# A request with fewer characters is tokenized on the event loop; a larger one in a worker thread.
PREPARE_INLINE = 16 * 1024


@dataclass(frozen=True)
class Ran:
    """One job's encodings and, per sequence, each graph output's row (sequence axis unpadded)."""

    encodings: list[Encoding]
    rows: list[dict[str, Array]]

    @property
    def tokens(self) -> int:
        return sum(len(e.ids) for e in self.encodings)


def softmax(x: Array, axis: int = -1) -> FloatArray:
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return np.asarray(z / z.sum(axis=axis, keepdims=True), dtype=np.float32)


class TokenModel:
    """A graph with a tokenizer: text pairs in, graph output rows out, dynamically batched. It shares its
    model version's session and recorder with the version's ``TensorModel`` (KServe v2 serves the graph)."""

    truncation = "longest_first"
    task = "text-classification"

    def __init__(
        self, name: str, version: str, path: Path, session: OrtSession, settings: ServerSettings, recorder: Recorder
    ) -> None:
        self.name = name
        self.version = version
        self.session = session
        self._recorder = recorder
        self.card = read_card(path)
        self.task = str(self.card.get("task", self.task))
        self.tokenizer = load_tokenizer(path, f"{self.task} model {name!r}")
        self.max_length = int(self.card.get("max_length") or 512)
        self.tokenizer.enable_truncation(self.max_length, strategy=self.truncation, stride=self.doc_stride())
        self.pad_id = int(self.tokenizer.token_to_id("[PAD]") or 0)
        self.graph_inputs = {t.name for t in self.session.info.inputs}
        self.graph_outputs = [t.name for t in self.session.info.outputs]
        # outputs with a (symbolic) sequence axis, e.g. QA's start/end logits: cut back to each row's length
        self.per_token = {
            t.name
            for t in self.session.info.outputs
            if len(t.shape) >= 2 and not (isinstance(t.shape[1], int) and t.shape[1] >= 0)
        }
        self.chunk = max(1, settings.max_batch_size)
        self.limits = settings.limits
        self.text_batcher: Batcher[list[Encoding], Ran] = text_batcher(self._run_texts, len, name, settings, recorder)

    async def start(self) -> None:
        self.text_batcher.start()

    async def close(self) -> None:
        await self.text_batcher.close()

    async def run_pairs(self, pairs: list[Pair]) -> Ran:
        """Checked, tokenized (in a worker when large) and bounded before it joins a batch."""
        started, ok = time.perf_counter(), False
        try:
            size = sum(len(a) + len(b or "") for a, b in pairs)
            encoded = self._encode(pairs) if size < PREPARE_INLINE else await asyncio.to_thread(self._encode, pairs)
            tokens = sum(len(e.ids) for e in encoded)
            if tokens > self.limits.max_request_tokens:
                raise PayloadTooLarge(
                    f"the request holds {tokens} tokens; at most {self.limits.max_request_tokens} per request "
                    "(the server's --limit max_request_tokens). Split it into several requests"
                )
            result = await self.text_batcher.submit(encoded)
            ok = True
        finally:
            self._recorder.request(ok, time.perf_counter() - started)
        return result

    def check_inputs(self, count: int, param: str = "input") -> None:
        if count > self.limits.max_inputs:
            raise PayloadTooLarge(
                f"{param} has {count} items; at most {self.limits.max_inputs} per request "
                "(the server's --limit max_inputs). Split it into several requests",
                param=param,
            )

    def doc_stride(self) -> int:
        """Tokens that overlapping windows of a long input share; 0: a long input is cut, not windowed."""
        return 0

    def windows(self, encoding: Encoding) -> list[Encoding]:
        """The sequences one pair runs as (its windows, where the task windows long input)."""
        return [encoding]

    def _encode(self, pairs: list[Pair]) -> list[Encoding]:
        items: list[Any] = [a if b is None else (a, b) for a, b in pairs]
        try:
            encodings = self.tokenizer.encode_batch(items)
        except Exception as exc:  # e.g. only_second truncation with a question longer than max_length
            raise InvalidRequest(
                f"model {self.name!r} could not fit the input into {self.max_length} tokens ({exc}); shorten it",
                code="context_length_exceeded",
            ) from exc
        return [w for e in encodings for w in self.windows(e)]

    def _run_texts(self, jobs: list[list[Encoding]]) -> list[Ran | BaseException]:
        return run_sorted(
            jobs, length=lambda e: len(e.ids), chunk=self.chunk, run_chunk=self._run_text_chunk, build=Ran
        )

    def _run_text_chunk(self, encs: list[Encoding]) -> list[dict[str, Array]]:
        feeds = pad([e.ids for e in encs], self.pad_id, [e.type_ids for e in encs])
        result = self.session.run({k: v for k, v in feeds.items() if k in self.graph_inputs}, self.graph_outputs)
        out: list[dict[str, Array]] = []
        for row, e in enumerate(encs):
            n = len(e.ids)
            out.append({k: a[row, :n] if k in self.per_token else a[row] for k, a in result.items()})
        return out
