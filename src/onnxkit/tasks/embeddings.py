"""Embeddings: tokenize → dynamic batcher → onnxruntime → pooled, normalised vectors.

Concurrent requests are merged by the batcher; inside a merged batch all
sequences are sorted by length and run in chunks of ``max_batch_size`` so that
little padding is computed (padding, not batch size, is the cost on CPU).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from onnxkit.errors import InvalidRequest, SupplyError
from onnxkit.runtime import metrics
from onnxkit.runtime.batching import Batcher
from onnxkit.settings import ServerSettings
from onnxkit.tasks.loader import read_card
from onnxkit.tasks.tensor import TensorModel
from onnxkit.tasks.text_batch import pad, run_sorted
from onnxkit.types import FloatArray

Ids = list[int]


@dataclass(frozen=True)
class Embedded:
    vectors: FloatArray  # [n, dim]
    tokens: int


@dataclass(frozen=True)
class _Job:
    texts: Sequence[str] | None
    ids: list[Ids] | None
    truncate: bool

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.ids or [])


class Embedder(TensorModel):
    """A ``TensorModel`` (KServe v2 / TF-Serving serve its graph) that also embeds texts."""

    def __init__(self, name: str, path: Path, settings: ServerSettings, version: str = "1") -> None:
        super().__init__(name, path, settings, {"version": version})
        self.task = "embeddings"
        self.path = path
        card = read_card(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise SupplyError(f"embedding model {name!r} has no tokenizer.json in {path}")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_length = int(card.get("max_length") or _config_max_length(path) or 512)
        self.pad_id = int(self.tokenizer.token_to_id("[PAD]") or 0)
        names = {t.name for t in self.session.info.inputs}
        self.has_token_types = "token_type_ids" in names
        out = self.session.info.outputs[0]
        self.output = out.name
        self.pooled = len(out.shape) == 2  # pooling + normalisation inside the graph
        self.normalize = bool(card.get("normalize", True))
        self.chunk = settings.max_batch_size
        # Tokenization runs in the batch thread too, once per merged batch: overlapping it with
        # onnxruntime's intra-op threads on a small machine stalls them.
        self.batcher: Batcher[_Job, Embedded] = Batcher(
            self._embed_batch,
            name=name,
            # merge up to 16 chunks so that sorting by length has something to sort
            max_batch_cost=settings.max_batch_size * 16,
            max_delay_ms=settings.max_batch_delay_ms,
            max_queue=settings.max_queue,
            cost=len,
            settle=True,
            on_batch=metrics.METRICS.batch_hook(name, version),
        )
        dim = out.shape[-1]
        self.dimensions = dim if isinstance(dim, int) else None

    async def start(self) -> None:
        await super().start()
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()
        await super().close()

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

    async def embed(self, texts: Sequence[str] | None, ids: list[Ids] | None, truncate: bool) -> Embedded:
        started, ok = time.perf_counter(), False
        try:
            result = await self.batcher.submit(_Job(texts, ids, truncate))
            ok = True
        finally:
            metrics.record_request(self.name, self.version, ok, time.perf_counter() - started)
        return result

    def _embed_batch(self, jobs: list[_Job]) -> list[Embedded | BaseException]:
        texts = [t for job in jobs if job.texts is not None for t in job.texts]
        encoded = iter(e.ids for e in self.tokenizer.encode_batch(texts)) if texts else iter(())
        fitted: list[list[Ids] | BaseException] = []
        for job in jobs:
            raw = [next(encoded) for _ in job.texts] if job.texts is not None else job.ids or []
            try:
                fitted.append(self._fit(raw, job.truncate, job.texts is not None))
            except InvalidRequest as exc:
                fitted.append(exc)
        return run_sorted(
            fitted,
            length=len,
            chunk=self.chunk,
            run_chunk=lambda seqs: list(self._run_chunk(seqs)),
            build=lambda seqs, vectors: Embedded(np.stack(vectors), sum(len(q) for q in seqs)),
        )

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


def _config_max_length(path: Path) -> int | None:
    cfg = path / "config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_position_embeddings")
        return int(value) if value else None
    return None
