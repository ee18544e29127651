"""Rerank: documents ordered by relevance to a query (the Jina / Cohere ``/v1/rerank`` shape).

- A cross-encoder (a ``text-classification`` export with one logit) scores each (query, document)
  pair; ``relevance_score`` is the logit's sigmoid, as TEI and sentence-transformers report it.
  Long pairs are cut at the model's ``max_length``, as ``/v1/classify`` cuts long input.
- An embeddings model (an onnxkit extension) ranks by the cosine of the query's and each
  document's embedding; ``relevance_score`` is that cosine (from -1 to 1). Long texts are cut at
  the model's ``max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxkit.errors import InvalidRequest
from onnxkit.tasks.classify import Classifier
from onnxkit.tasks.embeddings import Embedder
from onnxkit.types import Array

MAX_DOCUMENTS = 1000


@dataclass(frozen=True)
class Ranked:
    index: int  # in the request's documents
    score: float


@dataclass(frozen=True)
class Ranking:
    results: list[Ranked]  # best first
    tokens: int


def check(query: str, documents: Sequence[str], top_n: int | None) -> None:
    if not query:
        raise InvalidRequest("query is empty; expected the text to rank the documents against", param="query")
    if not documents:
        raise InvalidRequest("documents is empty; expected a list of texts to rank", param="documents")
    if len(documents) > MAX_DOCUMENTS:
        raise InvalidRequest(
            f"documents has {len(documents)} texts; at most {MAX_DOCUMENTS} are ranked in one request",
            param="documents",
        )
    if any(not d for d in documents):
        raise InvalidRequest("documents contains an empty string", param="documents")
    if top_n is not None and top_n < 1:
        raise InvalidRequest(f"top_n is {top_n}; expected at least 1", param="top_n")


def cross_encoder_check(model: Classifier) -> None:
    if model.zero_shot or len(model.labels) != 1:
        raise InvalidRequest(
            f"model {model.name!r} is a {model.task} model with {len(model.labels)} labels; rerank needs a "
            "cross-encoder (a text-classification export with one logit) or an embeddings model",
            param="model",
        )


async def with_cross_encoder(model: Classifier, query: str, documents: Sequence[str], top_n: int | None) -> Ranking:
    check(query, documents, top_n)
    cross_encoder_check(model)
    ran = await model.run_pairs([(query, d) for d in documents])
    logits = np.stack([r["logits"] for r in ran.rows]).reshape(len(documents)).astype(np.float64)
    return Ranking(_order(1.0 / (1.0 + np.exp(-logits)), top_n), ran.tokens)


async def with_embeddings(model: Embedder, query: str, documents: Sequence[str], top_n: int | None) -> Ranking:
    check(query, documents, top_n)
    embedded = await model.embed([query, *documents], None, truncate=True)
    vectors = _unit(np.asarray(embedded.vectors, dtype=np.float64))
    return Ranking(_order(vectors[1:] @ vectors[0], top_n), embedded.tokens)


def _unit(x: Array) -> Array:
    return np.asarray(x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None))


def _order(scores: Array, top_n: int | None) -> list[Ranked]:
    order = np.argsort(-scores, kind="stable")[: top_n or len(scores)]
    return [Ranked(int(i), float(scores[i])) for i in order]
