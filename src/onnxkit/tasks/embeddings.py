"""Embeddings: check and tokenize → dynamic batcher → onnxruntime → pooled, normalised vectors.

Each request is checked, tokenized and fitted to the model in its own task (in a worker thread when
it is large) before it joins a batch, so a batch holds only valid sequences; every size it controls
(inputs, tokens, token ids) is bounded first. Concurrent requests are merged by the batcher; inside a
merged batch all sequences are sorted by length and run in chunks of ``max_batch_size`` so that
little padding is computed (padding, not batch size, is the cost on CPU).

A graph with a fused tokenizer (one string input, ``onnxkit export --fuse-tokenizer``) is fed
the texts themselves, in the same sorted chunks; the folder's ``tokenizer.json`` still counts
their tokens (``usage``, the length limit, the sort). Such a graph cuts long text at the card's
``max_length`` itself, as ``"truncate": true`` asks, so the count reported is the cut one. Token
ids cannot be fed to it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxkit.errors import InvalidRequest, PayloadTooLarge, SupplyError
from onnxkit.export.card import read_card
from onnxkit.runtime.batching import Batcher
from onnxkit.runtime.metrics import Recorder
from onnxkit.runtime.ort import OrtSession
from onnxkit.settings import ServerSettings
from onnxkit.tasks.text_batch import load_tokenizer, pad, run_sorted, text_batcher
from onnxkit.types import FloatArray

Ids = list[int]


@dataclass(frozen=True)
class Embedded:
    vectors: FloatArray  # [n, dim]
    tokens: int


@dataclass(frozen=True)
class _Text:
    """A text for a graph that tokenizes it itself, and the number of tokens that graph embeds."""

    text: str
    tokens: int


@dataclass(frozen=True)
class _Job:
    """One request, checked: its token ids fitted to the model, and its texts for a fused graph."""

    seqs: list[Ids]
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.seqs)


# A request with fewer characters (or token ids) than this is prepared on the event loop; a larger one
# in a worker thread, so that a big request never stalls the others.
PREPARE_INLINE = 16 * 1024


class Embedder:
    """Texts (or token ids) in, one vector each out. It shares its model version's session and recorder
    with the version's ``TensorModel``, so KServe v2 serves the same graph and counts the same traffic."""

    task = "embeddings"

    def __init__(
        self, name: str, version: str, path: Path, session: OrtSession, settings: ServerSettings, recorder: Recorder
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.session = session
        self._recorder = recorder
        card = read_card(path)
        self.tokenizer = load_tokenizer(path, f"embedding model {name!r}")
        self.tokenizer.no_truncation()
        self.max_length = int(card.get("max_length") or _config_int(path, "max_position_embeddings") or 512)
        self.pad_id = int(self.tokenizer.token_to_id("[PAD]") or 0)
        inputs = self.session.info.inputs
        names = {t.name for t in inputs}
        self.has_token_types = "token_type_ids" in names
        out = self.session.info.outputs[0]
        self.output = out.name
        self.pooled = len(out.shape) == 2  # pooling + normalisation inside the graph
        # A fused tokenizer: the graph takes the texts as one string tensor.
        self.fused = len(inputs) == 1 and inputs[0].dtype == np.object_
        self.text_input = inputs[0].name
        if self.fused and not self.pooled:
            raise SupplyError(
                f"embedding model {name!r} takes text (a fused tokenizer) but its output {out.name!r} is "
                f"per token {list(out.shape)}; export it with --task pooling"
            )
        self.normalize = bool(card.get("normalize", True))
        self.chunk = settings.max_batch_size
        self.limits = settings.limits
        # the ids the model embeds: its card's or config's vocabulary (the embedding table), else the tokenizer's
        self.vocab_size = int(
            card.get("vocab_size") or _config_int(path, "vocab_size") or self.tokenizer.get_vocab_size(True)
        )
        self.batcher: Batcher[_Job, Embedded] = text_batcher(self._embed_batch, len, name, settings, recorder)
        dim = out.shape[-1]
        self.dimensions = dim if isinstance(dim, int) else None

    async def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()

    async def embed(self, texts: Sequence[str] | None, ids: list[Ids] | None, truncate: bool) -> Embedded:
        started, ok = time.perf_counter(), False
        try:
            size = sum(map(len, texts)) if texts is not None else sum(map(len, ids or []))
            if size < PREPARE_INLINE:
                job = self.prepare(texts, ids, truncate)
            else:
                job = await asyncio.to_thread(self.prepare, texts, ids, truncate)
            result = await self.batcher.submit(job)
            ok = True
        finally:
            self._recorder.request(ok, time.perf_counter() - started)
        return result

    def prepare(self, texts: Sequence[str] | None, ids: list[Ids] | None, truncate: bool) -> _Job:
        """A request checked against every bound, tokenized and fitted: what joins a batch."""
        count = len(texts) if texts is not None else len(ids or [])
        if count > self.limits.max_inputs:
            raise PayloadTooLarge(
                f"input has {count} items; at most {self.limits.max_inputs} per request "
                "(the server's --limit max_inputs). Split it into several requests",
                param="input",
            )
        if texts is None:
            if self.fused:
                raise InvalidRequest(
                    f"model {self.name!r} tokenizes inside its graph and expects text; send input as a "
                    "string or a list of strings, not token ids",
                    param="input",
                )
            for i, seq in enumerate(ids or []):
                if seq and (min(seq) < 0 or max(seq) >= self.vocab_size):
                    bad = next(t for t in seq if t < 0 or t >= self.vocab_size)
                    raise InvalidRequest(
                        f"input[{i}] holds token id {bad}; model {self.name!r} has ids 0 to {self.vocab_size - 1}",
                        param="input",
                    )
            return self._bounded(_Job(self._fit(ids or [], truncate, texts=False)))
        encoded = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        return self._bounded(_Job(self._fit(encoded, truncate, texts=True), list(texts) if self.fused else None))

    def _bounded(self, job: _Job) -> _Job:
        tokens = sum(map(len, job.seqs))
        if tokens > self.limits.max_request_tokens:
            raise PayloadTooLarge(
                f"input holds {tokens} tokens; at most {self.limits.max_request_tokens} per request "
                "(the server's --limit max_request_tokens). Split it into several requests",
                param="input",
            )
        return job

    def _fit(self, ids: list[Ids], truncate: bool, texts: bool) -> list[Ids]:
        out = []
        for i, seq in enumerate(ids):
            if not seq:
                raise InvalidRequest(f"input[{i}] is empty; expected at least one token", param="input")
            if len(seq) > self.max_length:
                if not truncate:
                    raise InvalidRequest(
                        f"input[{i}] has {len(seq)} tokens; model {self.name!r} allows at most "
                        f"{self.max_length}. Shorten it or send \"truncate\": true",
                        param="input",
                        code="context_length_exceeded",
                    )
                # keep the closing [SEP] of tokenized text
                seq = seq[: self.max_length - 1] + seq[-1:] if texts else seq[: self.max_length]
            out.append(seq)
        return out

    def _embed_batch(self, jobs: list[_Job]) -> list[Embedded | BaseException]:
        if self.fused:
            # The graph gets the texts; the fitted ids only say how many tokens it will embed.
            items = [[_Text(t, len(seq)) for t, seq in zip(job.texts or (), job.seqs, strict=True)] for job in jobs]
            return run_sorted(
                items,
                length=lambda x: x.tokens,
                chunk=self.chunk,
                run_chunk=lambda xs: list(self._run_texts(xs)),
                build=lambda xs, vectors: Embedded(np.stack(vectors), sum(x.tokens for x in xs)),
            )
        return run_sorted(
            [job.seqs for job in jobs],
            length=len,
            chunk=self.chunk,
            run_chunk=lambda seqs: list(self._run_chunk(seqs)),
            build=lambda seqs, vectors: Embedded(np.stack(vectors), sum(len(q) for q in seqs)),
        )

    def _run_texts(self, items: list[_Text]) -> FloatArray:
        # The fused graph tokenizes, pads to the chunk's longest, truncates at max_length and pools.
        feeds = {self.text_input: np.array([x.text for x in items], dtype=object)}
        return self.session.run(feeds, [self.output])[self.output].astype(np.float32, copy=False)

    def _run_chunk(self, seqs: list[Ids]) -> FloatArray:
        feeds = pad(seqs, self.pad_id)
        if not self.has_token_types:
            del feeds["token_type_ids"]
        mask = feeds["attention_mask"]
        hidden = self.session.run(feeds, [self.output])[self.output].astype(np.float32, copy=False)
        if self.pooled:
            return hidden
        # A `default` export (last_hidden_state): mean-pool and normalise here.
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if self.normalize:
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return np.asarray(pooled, dtype=np.float32)


def _config_int(path: Path, key: str) -> int | None:
    cfg = path / "config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get(key)
        return int(value) if isinstance(value, int) and value > 0 else None
    return None


def check_dimensions(dimensions: int, width: int, model: str) -> None:
    if not 1 <= dimensions <= width:
        raise InvalidRequest(
            f"dimensions is {dimensions}; model {model!r} produces {width}-dimensional embeddings, "
            f"so expected 1 to {width}",
            param="dimensions",
        )


def shorten(vectors: FloatArray, dimensions: int | None, model: str) -> FloatArray:
    """OpenAI's ``dimensions``: the first ``dimensions`` components, renormalised to unit length.

    Matryoshka-trained models keep most of their quality this way; for others the shortened vectors
    rank worse, as with any model asked for fewer dimensions than it was trained for.
    """
    if dimensions is None or dimensions == vectors.shape[1]:
        return vectors
    check_dimensions(dimensions, vectors.shape[1], model)
    cut = vectors[:, :dimensions].astype(np.float32, copy=True)
    cut /= np.clip(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12, None)
    return cut
