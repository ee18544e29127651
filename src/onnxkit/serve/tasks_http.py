"""Task routes for encoder exports: ``POST /v1/classify`` and ``POST /v1/qa`` (see docs/tasks.md).

/v1/classify is shaped after TEI's /predict and Infinity's /classify, in OpenAI's list envelope;
zero-shot models take ``candidate_labels``. /v1/qa is extractive question answering.
A transport: wire format <-> task calls; errors are raised as onnxkit errors.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from onnxkit.errors import InvalidRequest
from onnxkit.models.folder import Task
from onnxkit.serve.http import app_state, body_of, json_response, read_body

router = APIRouter(tags=["tasks"])

DEFAULT_TEMPLATE = "This example is {}."


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ClassifyRequest(_Request):
    model: str | None = None
    input: str | list[str]
    candidate_labels: list[str] | None = None
    hypothesis_template: str = DEFAULT_TEMPLATE
    multi_label: bool = False
    top_k: int | None = Field(default=None, ge=1)


class QARequest(_Request):
    model: str | None = None
    question: str | list[str]
    context: str | list[str]


def _texts(value: str | list[str], param: str) -> list[str]:
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise InvalidRequest(f"{param} is empty; expected a string or a list of strings", param=param)
    return texts


@router.post("/v1/classify", openapi_extra=body_of(ClassifyRequest))
async def classify(request: Request) -> Response:
    body = await read_body(request, ClassifyRequest)
    zero_shot = body.candidate_labels is not None
    models = app_state(request).models
    wanted, other = (Task.ZERO_SHOT, Task.TEXT_CLASSIFICATION)[:: 1 if zero_shot else -1]
    # No model named: a model of the wanted kind, else the other kind (whose error then says why).
    tasks = [wanted] if models.names_for([wanted]) or not models.names_for([other]) else [other]
    model = models.classifier(body.model) if body.model else models.classifier(None, tasks)
    name = model.name
    texts = _texts(body.input, "input")
    if model.zero_shot:
        labels = body.candidate_labels
        if labels is None:
            raise InvalidRequest(
                f"model {name!r} is a zero-shot-classification model: send candidate_labels, "
                'e.g. "candidate_labels": ["sports", "politics"]',
                param="candidate_labels",
            )
        if not labels or any(not label.strip() for label in labels):
            raise InvalidRequest("candidate_labels must be a non-empty list of non-empty strings",
                                 param="candidate_labels")  # fmt: skip
        if "{}" not in body.hypothesis_template:
            raise InvalidRequest(
                f"hypothesis_template {body.hypothesis_template!r} has no {{}} for the label; "
                f"e.g. {DEFAULT_TEMPLATE!r}",
                param="hypothesis_template",
            )
        scored = await model.zero_shot_classify(texts, labels, body.hypothesis_template, body.multi_label,
                                                body.top_k)  # fmt: skip
    else:
        if zero_shot:
            raise InvalidRequest(
                f"model {name!r} serves task {model.task!r}, which has fixed labels; candidate_labels "
                "is for zero-shot-classification models",
                param="candidate_labels",
            )
        scored = await model.classify(texts, body.top_k)
    data = [
        {"index": i, "labels": [{"label": label, "score": score} for label, score in row]}
        for i, row in enumerate(scored.labels)
    ]
    usage = {"prompt_tokens": scored.tokens, "total_tokens": scored.tokens}
    return json_response({"object": "list", "model": name, "data": data, "usage": usage})


@router.post("/v1/qa", openapi_extra=body_of(QARequest))
async def qa(request: Request) -> Response:
    body = await read_body(request, QARequest)
    model = app_state(request).models.answerer(body.model)
    name = model.name
    if isinstance(body.question, str) != isinstance(body.context, str):
        raise InvalidRequest("question and context must both be strings or both be lists", param="context")
    questions, contexts = _texts(body.question, "question"), _texts(body.context, "context")
    if len(questions) != len(contexts):
        raise InvalidRequest(
            f"question has {len(questions)} items and context {len(contexts)}; send lists of equal length",
            param="context",
        )
    result = await model.answer(questions, contexts)
    data = [
        {"index": i, "answer": a.answer, "score": a.score, "start": a.start, "end": a.end}
        for i, a in enumerate(result.answers)
    ]
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return json_response({"object": "list", "model": name, "data": data, "usage": usage})
