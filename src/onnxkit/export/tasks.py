"""Export tasks: which transformers head to load and which tensors the graph returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from onnxkit.errors import InvalidRequest

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    auto_class: str  # transformers Auto* class that loads the right head
    outputs: tuple[str, ...]
    per_token: bool  # outputs keep the sequence axis


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("default", "AutoModel", ("last_hidden_state",), True),
        TaskSpec("pooling", "AutoModel", ("embeddings",), False),
        TaskSpec("text-classification", "AutoModelForSequenceClassification", ("logits",), False),
        TaskSpec("zero-shot-classification", "AutoModelForSequenceClassification", ("logits",), False),
        TaskSpec(
            "question-answering", "AutoModelForQuestionAnswering", ("start_logits", "end_logits"), True
        ),
        TaskSpec("token-classification", "AutoModelForTokenClassification", ("logits",), True),
    )
}
ALL_TASKS = (*TASKS, "causal-lm")


def spec_for(task: str) -> TaskSpec:
    if task not in TASKS:
        raise InvalidRequest(f"task {task!r} is not supported; expected one of {', '.join(ALL_TASKS)}")
    return TASKS[task]


def output_axes(spec: TaskSpec) -> dict[str, dict[int, str]]:
    axes = {0: "batch", 1: "sequence"} if spec.per_token else {0: "batch"}
    return {name: dict(axes) for name in spec.outputs}


class TaskGraph(torch.nn.Module):
    """Positional token inputs in, the task's named outputs out (tracing needs positional tensors)."""

    def __init__(self, model: Any, spec: TaskSpec, input_names: tuple[str, ...], pooling: str) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.input_names = input_names
        self.pooling = pooling

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kwargs = dict(zip(self.input_names, tensors, strict=True))
        out = self.model(**kwargs)
        if self.spec.name == "pooling":
            return (pool(out.last_hidden_state, kwargs["attention_mask"], self.pooling),)
        return tuple(getattr(out, name) for name in self.spec.outputs)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        pooled = hidden[:, 0]
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        # clamp: an all-padding row must not divide by zero
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2.0, dim=-1)


def entailment_index(id2label: dict[int, str]) -> int | None:
    for idx, label in id2label.items():
        if label.lower().startswith("entail"):
            return int(idx)
    return None
