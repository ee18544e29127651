"""Every error status in OpenAI's shape, and cancellation of a disconnected client."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import onnx
import openai
import pytest
from onnx import TensorProto, helper

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

MSG = [{"role": "user", "content": "Name a colour."}]


def assert_openai_error(r: httpx.Response, status: int, needle: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert needle in err["message"], err["message"]
    assert "Traceback" not in r.text


def test_400_invalid_requests(server: Server) -> None:
    url = server.url + "/v1/chat/completions"
    assert_openai_error(httpx.post(url, json={"model": "tiny-chat"}), 400, "messages")
    assert_openai_error(httpx.post(url, json={"model": "tiny-chat", "messages": MSG, "temperature": 5}), 400,
                        "temperature")
    r = httpx.post(url, json={"model": "tiny-chat", "messages": [{"role": "robot", "content": "x"}]})
    assert_openai_error(r, 400, "role")
    assert_openai_error(httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400,
                        "invalid request")


def test_404_unknown_model(server: Server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="no-such-model"):
        client.chat.completions.create(model="no-such-model", messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    assert_openai_error(httpx.get(server.url + "/v1/models/no-such-model"), 404, "no-such-model")


def test_413_body_over_limit(server: Server) -> None:
    big = {"model": "tiny-embed", "input": ["paris " * 1000] * 100}  # > 256 KiB, the fixture's limit
    assert_openai_error(httpx.post(server.url + "/v1/embeddings", json=big), 413, "limit")


def test_401_api_key(tiny_embed_model: Path) -> None:
    with Server([ModelSpec("tiny-embed", tiny_embed_model)], port=0, api_key="sekret") as s:
        for key in ("wrong", None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            r = httpx.post(s.url + "/v1/embeddings", json={"input": "x"}, headers=headers)
            assert_openai_error(r, 401, "API key")
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="sekret", max_retries=0)
        assert len(good.embeddings.create(model="tiny-embed", input="paris").data) == 1
        assert httpx.get(s.url + "/health").status_code == 200  # health stays open for probes


def test_429_when_queue_is_full(tiny_embed_model: Path) -> None:
    with Server([ModelSpec("tiny-embed", tiny_embed_model)], port=0, max_queue=1, max_batch_size=1,
                max_batch_delay_ms=300) as s:

        async def flood() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as c:
                rs = await asyncio.gather(*(c.post(s.url + "/v1/embeddings", json={"input": f"text {i}"})
                                            for i in range(12)))
            for r in rs:
                if r.status_code == 429:
                    assert_openai_error(r, 429, "queued")
            return [r.status_code for r in rs]

        codes = asyncio.run(flood())
        assert 429 in codes and 200 in codes, codes


@pytest.fixture(scope="module")
def broken_embedder(tiny_embed_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real model that fails inside onnxruntime for inputs of an odd total size."""
    root = tmp_path_factory.mktemp("broken") / "broken"
    root.mkdir()
    for name in ("tokenizer.json", "onnxkit.json"):
        shutil.copy(tiny_embed_model / name, root / name)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"])
    out = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["b", 2])
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [0, -1, 2])  # [b, s/2, 2]: odd s fails
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["f", "m"], ["g"]),
         helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
         helper.make_node("Reshape", ["g", "shape"], ["h"]),
         helper.make_node("ReduceSum", ["h", "axes"], ["embeddings"], keepdims=0)],
        "broken", [ids, mask], [out], [shape, axes])
    graph.node.sort(key=lambda n: n.op_type != "Cast")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), root / "model.onnx")
    with Server([ModelSpec("broken", root)], port=0) as s:
        yield s


def test_500_without_traceback(broken_embedder: Server) -> None:
    url = broken_embedder.url + "/v1/embeddings"
    assert httpx.post(url, json={"input": [[2, 5, 6, 3]]}).status_code == 200  # 4 values reshape to [-1, 2]
    r = httpx.post(url, json={"input": [[2, 5, 3]]})
    assert_openai_error(r, 500, "internal error")
    assert httpx.post(url, json={"input": [[2, 5, 6, 3]]}).status_code == 200  # and it keeps serving


def test_a_500_keeps_the_connection_open(broken_embedder: Server) -> None:
    """After an internal error the client's next request on the same keep-alive connection is answered."""
    with httpx.Client(base_url=broken_embedder.url, timeout=30) as client:
        streams = []

        def remember(response: httpx.Response) -> None:
            streams.append(response.extensions["network_stream"])

        client.event_hooks["response"] = [remember]
        assert client.post("/v1/embeddings", json={"input": [[2, 5, 3]]}).status_code == 500
        assert client.post("/v1/embeddings", json={"input": [[2, 5, 6, 3]]}).status_code == 200
    assert streams[0] is streams[1]  # one connection for both


def generated_tokens(server: Server) -> float:
    text = httpx.get(server.url + "/metrics").text
    m = re.search(r'onnxkit_generated_tokens_total\{model="tiny-chat",version="1"\} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def wait_for_change(server: Server, before: float, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = generated_tokens(server)
        if now != before:
            return now
        time.sleep(0.05)
    raise AssertionError("the generation never finished")


def test_disconnect_cancels_generation(server: Server) -> None:
    url = server.url + "/v1/chat/completions"
    # Precondition: uncancelled, greedy decoding of this model runs to the token limit.
    full = httpx.post(url, json={"model": "tiny-chat", "messages": MSG, "max_tokens": 200, "temperature": 0},
                      timeout=120).json()
    assert full["usage"]["completion_tokens"] == 200, full

    for stream in (True, False):
        before = generated_tokens(server)
        # ~2 s of decoding even for this fast model, so a disconnect must arrive well before the end
        body = {"model": "tiny-chat", "messages": MSG, "max_tokens": 16000, "temperature": 0, "stream": stream}
        if stream:
            with httpx.stream("POST", url, json=body, timeout=60) as r:
                for i, _ in enumerate(r.iter_lines()):
                    if i >= 3:
                        break  # leaving the block closes the connection
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url, json=body, timeout=0.3)
        after = wait_for_change(server, before)
        assert 0 < after - before < 16000, (stream, after - before)


def test_health_and_docs(server: Server) -> None:
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert httpx.get(server.url + "/docs").status_code == 200
    paths = json.loads(httpx.get(server.url + "/openapi.json").text)["paths"]
    assert "/v1/chat/completions" in paths and "/v1/embeddings" in paths


