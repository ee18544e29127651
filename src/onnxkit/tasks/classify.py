"""Text classification and zero-shot classification over an ``onnxkit export`` folder.

``Classifier`` is a ``TensorModel`` (so KServe v2 / TF-Serving keep serving the raw graph) that
also tokenizes text: requests go through a ``Batcher``; inside a merged batch the sequences are
sorted by length and run in chunks of ``max_batch_size``, as for embeddings.

- text-classification: softmax over the logits, labels from the card's ``id2label``.
- zero-shot-classification: one NLI pair per (text, candidate label) with premise = text and
  hypothesis = ``template.format(label)``. Single-label: softmax of the entailment logits across
  the labels. Multi-label (or a single candidate label): per label, softmax over
  [contradiction, entailment], the entailment probability.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from onnxkit.errors import InvalidRequest, SupplyError
from onnxkit.runtime.batching import Batcher
from onnxkit.settings import ServerSettings
from onnxkit.tasks.loader import read_card
from onnxkit.tasks.tensor import TensorModel
from onnxkit.tasks.text_batch import pad, run_sorted
from onnxkit.types import Array, FloatArray

CLASSIFY_TASKS = ("text-classification", "zero-shot-classification")
QA_TASK = "question-answering"
TEXT_TASKS = (*CLASSIFY_TASKS, QA_TASK)

Pair = tuple[str, str | None]


@dataclass(frozen=True)
class Ran:
    """One job's encodings and, per sequence, each graph output's row (sequence axis unpadded)."""

    encodings: list[Encoding]
    rows: list[dict[str, Array]]

    @property
    def tokens(self) -> int:
        return sum(len(e.ids) for e in self.encodings)


@dataclass(frozen=True)
class Scored:
    labels: list[list[tuple[str, float]]]  # per input text, sorted by score, best first
    tokens: int


def softmax(x: Array, axis: int = -1) -> FloatArray:
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return np.asarray(z / z.sum(axis=axis, keepdims=True), dtype=np.float32)


class TokenModel(TensorModel):
    """A tensor model with a tokenizer: text pairs in, graph output rows out, dynamically batched."""

    truncation = "longest_first"

    def __init__(
        self, name: str, path: Path, settings: ServerSettings, meta: Mapping[str, Any], version: str = "1"
    ) -> None:
        super().__init__(name, path, settings, {**meta, "version": version})
        self.card = read_card(path)
        self.task = str(self.card.get("task", self.task))
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise SupplyError(f"{self.task} model {name!r} has no tokenizer.json in {path}")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        self.tokenizer.no_padding()
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
        self.text_batcher: Batcher[list[Pair], Ran] = Batcher(
            self._run_texts,
            name=name,
            max_batch_cost=self.chunk * 16,
            max_delay_ms=settings.max_batch_delay_ms,
            max_queue=settings.max_queue,
            cost=len,
            settle=True,
            on_batch=self._metrics.on_batch,
        )

    async def start(self) -> None:
        await super().start()
        self.text_batcher.start()

    async def close(self) -> None:
        await self.text_batcher.close()
        await super().close()

    async def run_pairs(self, pairs: list[Pair]) -> Ran:
        started, ok = time.perf_counter(), False
        try:
            result = await self.text_batcher.submit(pairs)
            ok = True
        finally:
            self._metrics.record_request(ok, time.perf_counter() - started)
        return result

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

    def _run_texts(self, jobs: list[list[Pair]]) -> list[Ran | BaseException]:
        encoded: list[list[Encoding] | BaseException] = []
        for job in jobs:
            try:
                encoded.append(self._encode(job))
            except InvalidRequest as exc:
                encoded.append(exc)
        return run_sorted(
            encoded, length=lambda e: len(e.ids), chunk=self.chunk, run_chunk=self._run_text_chunk, build=Ran
        )

    def _run_text_chunk(self, encs: list[Encoding]) -> list[dict[str, Array]]:
        feeds = pad([e.ids for e in encs], self.pad_id, [e.type_ids for e in encs])
        result = self.session.run({k: v for k, v in feeds.items() if k in self.graph_inputs}, self.graph_outputs)
        out: list[dict[str, Array]] = []
        for row, e in enumerate(encs):
            n = len(e.ids)
            out.append({k: a[row, :n] if k in self.per_token else a[row] for k, a in result.items()})
        return out


class Classifier(TokenModel):
    """text-classification and zero-shot-classification exports."""

    def __init__(
        self, name: str, path: Path, settings: ServerSettings, meta: Mapping[str, Any], version: str = "1"
    ) -> None:
        super().__init__(name, path, settings, meta, version)
        raw = self.card.get("id2label") or {}
        id2label = {int(k): str(v) for k, v in raw.items()}
        width = self.session.info.outputs[0].shape[-1]
        count = width if isinstance(width, int) and width > 0 else len(id2label)
        self.labels = [id2label.get(i, f"LABEL_{i}") for i in range(count)]
        self.entailment: int | None = None
        self.contradiction: int | None = None
        if self.task == "zero-shot-classification":
            entail = self.card.get("entailment_index")
            if entail is None:
                raise SupplyError(f"zero-shot model {name!r} has no entailment_index in its onnxkit.json")
            self.entailment = int(entail)
            named = [i for i, v in enumerate(self.labels) if v.lower().startswith("contradict")]
            others = [i for i in range(len(self.labels)) if i != self.entailment]
            if not named and not others:
                raise SupplyError(f"zero-shot model {name!r} has one label; NLI needs two or more")
            self.contradiction = named[0] if named else others[0]

    @property
    def zero_shot(self) -> bool:
        return self.task == "zero-shot-classification"

    async def classify(self, texts: Sequence[str], top_k: int | None = None) -> Scored:
        ran = await self.run_pairs([(t, None) for t in texts])
        logits = np.stack([r["logits"] for r in ran.rows]).reshape(len(texts), -1)
        if logits.shape[1] == 1:  # a single-logit regression/binary head: its probability
            probs = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
        else:
            probs = softmax(logits)
        return Scored([_ranked(self.labels, row, top_k) for row in probs], ran.tokens)

    async def zero_shot_classify(
        self, texts: Sequence[str], labels: Sequence[str], template: str, multi_label: bool, top_k: int | None
    ) -> Scored:
        assert self.entailment is not None and self.contradiction is not None
        hypotheses = [template.format(label) for label in labels]
        ran = await self.run_pairs([(t, h) for t in texts for h in hypotheses])
        logits = np.stack([r["logits"] for r in ran.rows]).reshape(len(texts), len(labels), -1)
        entail = logits[..., self.entailment]
        if multi_label or len(labels) == 1:
            pair = np.stack([logits[..., self.contradiction], entail], axis=-1)
            probs = softmax(pair)[..., 1]
        else:
            probs = softmax(entail, axis=-1)
        return Scored([_ranked(list(labels), row, top_k) for row in probs], ran.tokens)


def _ranked(labels: Sequence[str], scores: Array, top_k: int | None) -> list[tuple[str, float]]:
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [(labels[i], float(scores[i])) for i in order]


def load_task(
    kind: str, name: str, path: Path, settings: ServerSettings, meta: Mapping[str, Any], version: str
) -> TensorModel:
    """The loader's entry for the text tasks (classification, zero-shot, question answering)."""
    if kind == QA_TASK:
        from onnxkit.tasks.qa import QuestionAnswerer

        return QuestionAnswerer(name, path, settings, meta, version)
    return Classifier(name, path, settings, meta, version)
