"""Extractive question answering over a ``question-answering`` export.

Each (question, context) pair is tokenized as one sequence pair. When it is longer than the card's
``max_length``, the context is split into overlapping windows (a document stride of a quarter of
``max_length`` tokens, as Hugging Face's pipeline does with 128 of 384), each with the question, at
most ``MAX_WINDOWS`` of them; every window runs in the same merged batch. In each window the answer is
the span (start <= end, at most ``MAX_ANSWER_TOKENS`` tokens) inside the context tokens with the
highest ``softmax(start)[s] * softmax(end)[e]``, the softmaxes taken over that window's context
tokens; the pair's answer is the best window's. ``start``/``end`` are character offsets into the
context, from the tokenizer's offsets, so ``context[start:end]`` is the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding

from onnxkit.errors import InvalidRequest
from onnxkit.tasks.token_model import TokenModel, softmax
from onnxkit.types import Array

MAX_ANSWER_TOKENS = 30
MAX_WINDOWS = 64  # about 64 * 3/4 * max_length context tokens (24k for a 512-token model)


@dataclass(frozen=True)
class Answer:
    answer: str
    score: float
    start: int
    end: int


@dataclass(frozen=True)
class Answers:
    answers: list[Answer]
    tokens: int


class QuestionAnswerer(TokenModel):
    task = "question-answering"
    truncation = "only_second"

    def doc_stride(self) -> int:
        return self.max_length // 4

    def windows(self, encoding: Encoding) -> list[Encoding]:
        found = [encoding, *encoding.overflowing]
        if len(found) > MAX_WINDOWS:
            raise InvalidRequest(
                f"the context needs {len(found)} windows of {self.max_length} tokens; model {self.name!r} "
                f"reads at most {MAX_WINDOWS} per question. Shorten the context",
                param="context",
                code="context_length_exceeded",
            )
        return found

    async def answer(self, questions: Sequence[str], contexts: Sequence[str]) -> Answers:
        self.check_inputs(len(questions), "question")
        for i, (q, c) in enumerate(zip(questions, contexts, strict=True)):
            if not q.strip():
                raise InvalidRequest(f"question[{i}] is empty", param="question")
            if not c.strip():
                raise InvalidRequest(f"context[{i}] is empty", param="context")
        ran = await self.run_pairs([(q, c) for q, c in zip(questions, contexts, strict=True)])
        out = []
        at = 0  # a pair's windows come together: the first one, then its overflowing ones
        for i, context in enumerate(contexts):
            n = 1 + len(ran.encodings[at].overflowing)
            found = [
                self._best(i, enc, row["start_logits"], row["end_logits"], context)
                for enc, row in zip(ran.encodings[at : at + n], ran.rows[at : at + n], strict=True)
            ]
            out.append(max(found, key=lambda a: a.score))
            at += n
        return Answers(out, ran.tokens)

    def _best(self, i: int, enc: Encoding, start_logits: Array, end_logits: Array, context: str) -> Answer:
        offsets = enc.offsets
        positions = [
            t for t, seq in enumerate(enc.sequence_ids) if seq == 1 and offsets[t][1] > offsets[t][0]
        ]
        if not positions:
            raise InvalidRequest(
                f"question[{i}] leaves no room for the context within {self.max_length} tokens; shorten it",
                param="question",
            )
        idx = np.asarray(positions)
        ps = softmax(np.asarray(start_logits, dtype=np.float32).reshape(-1)[idx])
        pe = softmax(np.asarray(end_logits, dtype=np.float32).reshape(-1)[idx])
        scores = np.outer(ps, pe)
        # a span runs forward (s <= e) and covers at most MAX_ANSWER_TOKENS tokens; positions are
        # consecutive context tokens, so the band is in token units
        scores = np.tril(np.triu(scores), MAX_ANSWER_TOKENS - 1)
        s, e = np.unravel_index(int(np.argmax(scores)), scores.shape)
        start, end = offsets[positions[int(s)]][0], offsets[positions[int(e)]][1]
        return Answer(context[start:end], float(scores[s, e]), int(start), int(end))
