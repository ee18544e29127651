"""Text classification and zero-shot classification over an ``onnxkit export`` folder.

``Classifier`` is a ``TokenModel``: it tokenizes texts (or NLI pairs), and its version's
``TensorModel`` keeps serving the raw graph over KServe v2 / TF-Serving.

- text-classification: softmax over the logits, labels from the card's ``id2label``.
- zero-shot-classification: one NLI pair per (text, candidate label) with premise = text and
  hypothesis = ``template`` with ``{}`` replaced by the label. Single-label: softmax of the entailment logits across
  the labels. Multi-label (or a single candidate label): per label, softmax over
  [contradiction, entailment], the entailment probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxkit.errors import PayloadTooLarge, SupplyError
from onnxkit.runtime.metrics import Recorder
from onnxkit.runtime.ort import OrtSession
from onnxkit.settings import ServerSettings
from onnxkit.tasks.token_model import TokenModel, softmax
from onnxkit.types import Array


@dataclass(frozen=True)
class Scored:
    labels: list[list[tuple[str, float]]]  # per input text, sorted by score, best first
    tokens: int


class Classifier(TokenModel):
    """text-classification and zero-shot-classification exports."""

    def __init__(
        self, name: str, version: str, path: Path, session: OrtSession, settings: ServerSettings, recorder: Recorder
    ) -> None:
        super().__init__(name, version, path, session, settings, recorder)
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
        self.check_inputs(len(texts))
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
        self.check_inputs(len(texts))
        pairs = len(texts) * len(labels)
        if pairs > self.limits.max_pairs:
            raise PayloadTooLarge(
                f"{len(texts)} texts x {len(labels)} candidate labels make {pairs} pairs; at most "
                f"{self.limits.max_pairs} per request (the server's --limit max_pairs). Send fewer",
                param="candidate_labels",
            )
        hypotheses = [template.replace("{}", label) for label in labels]
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
