"""Schemathesis against /openapi.json on the tiny models: no request the schema allows (nor one it forbids) gets
a 5xx or a dropped connection. Bounded: a fixed number of examples per operation and mode (about two minutes)."""

from __future__ import annotations

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from .conftest import Served

EXAMPLES = 100
MODELS = {
    "/v1/chat/completions": "tiny-chat",
    "/v1/completions": "tiny-chat",
    "/v1/embeddings": "tiny-embed",
    "/v1/classify": "tiny-nli",
    "/v1/qa": "tiny-qa",
}


TENSOR_MODELS = ["mlp", "pad", "words"]


def _steer(case: schemathesis.Case) -> None:
    """Mostly a served model, so the fuzzer explores the model's validation rather than 404s; generations are
    kept short so the run stays bounded."""
    params = case.path_parameters
    if params and "model" in params and len(str(params["model"])) % 4 != 0:
        params["model"] = TENSOR_MODELS[len(str(params["model"])) % 3]
        if "version" in params:
            params["version"] = "1"
    body = case.body
    if not isinstance(body, dict):
        return
    if case.path in MODELS and len(str(body.get("model", ""))) % 4 != 0:
        body["model"] = MODELS[case.path]
    for key in ("max_tokens", "max_completion_tokens"):
        if not isinstance(body.get(key), int) or body[key] > 16:
            body[key] = 16


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_gets_a_5xx_or_a_dropped_connection(hard_server: Served, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(hard_server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # the routes that take bodies are described, KServe's and TF-Serving's too
    assert {op.path for op in operations} >= {*MODELS, "/v2/models/{model}/infer", "/v1/models/{model}:predict"}
    failures: list[str] = []

    for operation in operations:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode), seed=st.integers(0, 3))
        @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate])
        def run(case: schemathesis.Case, seed: int) -> None:  # fmt: skip
            _steer(case)
            try:
                response = case.call(base_url=hard_server.url, timeout=60)
            except requests.RequestException as exc:  # a dropped connection, a reset, a timeout
                failures.append(f"{case.method} {case.path} {case.body!r}: no answer ({exc})")
                return
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} {case.body!r}: {response.status_code} {response.text}")

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation without parameters has no invalid form
    assert not failures, "\n".join(failures[:10])
