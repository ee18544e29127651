"""`onnxkit predict`: request files through the server's own handlers, in-process (serve/predict.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import openai
import pytest
from onnx import TensorProto, helper

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.predict import Summary, predict
from onnxkit.serve.server import Server
from onnxkit.settings import ServerSettings

TEXTS = [f"sentence number {i} about {'cats' if i % 2 else 'the weather today'}" for i in range(40)]


def lines(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def run(spec: ModelSpec, source: Path, **options: object) -> tuple[list[dict[str, object]], int, int]:
    rows, summary = run_summary(spec, source, **options)
    return rows, summary.ok, summary.failed


def run_summary(spec: ModelSpec, source: Path, **options: object) -> tuple[list[dict[str, object]], Summary]:
    out = io.StringIO()
    summary = predict(spec, source, out, progress=False, **options)  # type: ignore[arg-type]
    return [json.loads(x) for x in out.getvalue().splitlines()], summary


def test_embeddings_in_order_equal_the_server_and_batched(tiny_embed_model: Path, tmp_path: Path) -> None:
    spec = ModelSpec("tiny-embed-predict", tiny_embed_model)
    src = lines(tmp_path / "in.jsonl", [{"input": t, "encoding_format": "float"} for t in TEXTS])
    got, summary = run_summary(spec, src, concurrency=64)
    ok, failed = summary.ok, summary.failed
    assert (ok, failed) == (len(TEXTS), 0)
    with Server([ModelSpec("tiny-embed", tiny_embed_model)], port=0) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        want = client.embeddings.create(model="tiny-embed", input=TEXTS, encoding_format="float")
    for row, expected in zip(got, want.data, strict=True):
        data = row["data"]
        assert isinstance(data, list)
        np.testing.assert_allclose(data[0]["embedding"], expected.embedding, atol=1e-5)
    # 40 one-text requests in flight together were merged by the batcher: fewer batches than requests
    assert summary.batched == len(TEXTS)  # the model's own statistics, read through its stats route
    assert summary.batches < len(TEXTS) / 2


def test_bad_lines_are_answered_in_place_and_the_run_goes_on(tiny_embed_model: Path, tmp_path: Path) -> None:
    spec = ModelSpec("tiny-embed-predict", tiny_embed_model)
    rows: list[object] = [
        {"input": "first"},
        "this line is not json",
        [1, 2, 3],
        {"input": []},
        {"custom_id": "c-5", "method": "POST", "url": "/v1/embeddings", "body": {"input": "fifth"}},
        {"custom_id": "c-6", "method": "POST", "url": "/v1/embeddings", "body": {"input": 7}},
        {"input": "last"},
    ]
    got, ok, failed = run(spec, lines(tmp_path / "in.jsonl", rows))
    assert (ok, failed) == (3, 4)
    assert got[0]["object"] == "list"
    assert "line 2 is not JSON" in got[1]["error"]["message"]  # type: ignore[index]
    assert "expected a request body" in got[2]["error"]["message"]  # type: ignore[index]
    assert got[3]["error"]["param"] == "input"  # type: ignore[index]
    assert got[4]["custom_id"] == "c-5" and got[4]["error"] is None
    vec = got[4]["response"]["body"]["data"][0]["embedding"]  # type: ignore[index]
    assert isinstance(vec, list) and len(vec) > 0  # the API's default: floats
    assert got[5]["custom_id"] == "c-6" and got[5]["response"]["status_code"] == 400  # type: ignore[index]
    assert got[5]["error"]["param"] == "input"  # type: ignore[index]
    assert got[6]["object"] == "list"


def test_chat_text_file(tiny_chat_model: Path, tmp_path: Path) -> None:
    spec = ModelSpec("tiny-chat-predict", tiny_chat_model)
    src = tmp_path / "prompts.txt"
    src.write_text("Name a colour.\n\nCount to three.\n")
    got, ok, failed = run(spec, src)
    assert (ok, failed) == (2, 0)  # the blank line is skipped
    for row in got:
        choice = row["choices"][0]  # type: ignore[index]
        assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    completions = lines(tmp_path / "c.jsonl", [{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}])
    (row,), _, _ = run(spec, completions)
    assert row["object"] == "text_completion" and row["usage"]["completion_tokens"] <= 5  # type: ignore[index]


def test_tensor_model_takes_kserve_bodies(tmp_path: Path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], w.flatten().tolist())],
    )
    model = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    xs = [np.full((1, 4), i, np.float32) for i in range(5)]
    rows: list[object] = [{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x.flatten().tolist()}]}
                          for x in xs]
    rows.append({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]})
    rows.append({"custom_id": "t", "method": "POST", "url": "/v2/models/mm/infer", "body": rows[0]})
    got, ok, failed = run(ModelSpec("mm", model), lines(tmp_path / "in.jsonl", rows))
    assert (ok, failed) == (6, 1)
    assert got.pop()["response"]["body"]["outputs"] == got[0]["outputs"]  # type: ignore[index]
    for x, row in zip(xs, got, strict=False):
        (out,) = row["outputs"]  # type: ignore[misc]
        np.testing.assert_allclose(out["data"], (x @ w).flatten())
    assert "nope" in str(got[-1]["error"])  # KServe's own error shape: {"error": "..."}


def test_cli_writes_the_output_file_and_says_what_failed(tiny_embed_model: Path, tmp_path: Path) -> None:
    src = lines(tmp_path / "in.jsonl", [{"input": "a"}, {"input": "b"}, "oops"])
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "onnxkit", "predict", str(tiny_embed_model), "-i", str(src), "-o", str(out), "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # one line failed
    assert "2 ok, 1 failed" in done.stderr
    assert len(out.read_text().splitlines()) == 3 and not (tmp_path / "out.jsonl.partial").exists()
    missing = subprocess.run([*cmd[:5], "-i", str(tmp_path / "absent.jsonl")], capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_text_file_for_a_task_that_needs_bodies_is_refused(tmp_path: Path) -> None:
    # a tensor model cannot take bare texts: the whole file is refused before the model loads
    model = tmp_path / "m.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "id",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    src = tmp_path / "texts.txt"
    src.write_text("some text\n")
    with pytest.raises(Exception, match="needs JSONL request bodies"):
        run(ModelSpec("id", model), src)


def test_every_kind_of_unreadable_line_is_answered_in_place(tiny_embed_model: Path, tmp_path: Path) -> None:
    spec = ModelSpec("tiny-embed-predict", tiny_embed_model)
    raw = [
        b'\xef\xbb\xbf{"input": "first, after a byte order mark"}\r',  # BOM and CRLF: a usable line
        b'{"input": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"input": NaN}',
        b'{"input": [1.5, Infinity]}',
        b'{"input": 1e999}',  # JSON's grammar allows it; it is infinite as a float
        b"[" * 3000,  # nesting deeper than Python's stack
        b'{"input": ' + b"7" * 4400 + b"}",  # an integer past Python's 4300-digit limit
        b'{"input": "' + b"x" * 5000 + b'"}',  # longer than the body limit below
        b"   ",  # blank: skipped, not answered
        b'{"input": "last"}',
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(raw) + b"\n")
    got, ok, failed = run(spec, src, settings=ServerSettings(max_body_bytes=4500, access_log=False))
    assert (ok, failed) == (2, 7) and len(got) == 9
    assert got[0]["object"] == "list" and got[8]["object"] == "list"
    messages = [str(row["error"]["message"]) for row in got[1:8]]  # type: ignore[index]
    assert "line 2 is not UTF-8: byte 0xe9 at column 15" in messages[0]
    for message in messages[1:4]:
        assert "JSON cannot carry" in message and "NaN, Infinity" in message
    assert "line 6 cannot be read as JSON (maximum recursion depth" in messages[4]
    assert "line 7 cannot be read as JSON (Exceeds the limit (4300 digits)" in messages[5]
    assert "line 8 is 5013 bytes; a request body is limited to 4500 bytes (--max-body-bytes)" in messages[6]
    for row in got[1:8]:
        assert set(row["error"]) == {"message", "type", "param", "code"}  # type: ignore[arg-type]  # OpenAI's shape


def test_batch_api_lines_are_checked_before_they_are_sent(tiny_embed_model: Path, tmp_path: Path) -> None:
    spec = ModelSpec("tiny-embed-predict", tiny_embed_model)
    unload = "/v2/repository/models/tiny-embed-predict/unload"
    rows: list[object] = [
        {"custom_id": "a", "method": "POST", "url": unload, "body": {}},  # would take the model away
        {"custom_id": "b", "method": "GET", "url": "/v1/embeddings", "body": {"input": "x"}},
        {"custom_id": "c", "url": "/v1/embeddings", "body": ["x"]},
        {"custom_id": "d", "url": "/v1/embeddings", "body": {"input": "x"}, "priority": 1},
        {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"input": "still served"}},
    ]
    got, ok, failed = run(spec, lines(tmp_path / "in.jsonl", rows))
    assert (ok, failed) == (1, 4)
    errors = [str(row["error"]["message"]) for row in got[:4]]  # type: ignore[index]
    assert f"url '{unload}' is not an inference route" in errors[0]
    assert "method 'GET'" in errors[1] and "POST" in errors[1]
    assert "body is a JSON list; expected the request body (an object)" in errors[2]
    assert "line 4 has priority; a Batch API line has custom_id, method, url and body" in errors[3]
    assert [row["response"]["status_code"] for row in got] == [400, 400, 400, 400, 200]  # type: ignore[index]


def test_a_line_the_model_fails_on_is_answered_in_place(tmp_path: Path) -> None:
    # onnxruntime itself fails on the second line (4 values cannot take the shape 3x3): the failure
    # is that line's answer, in KServe's error shape, and the lines around it are served
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = tmp_path / "reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)

    def row(shape: list[int]) -> dict[str, object]:
        return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
                           {"name": "shape", "datatype": "INT64", "shape": [2], "data": shape}]}

    src = lines(tmp_path / "in.jsonl", [row([2, 2]), row([3, 3]), row([1, 4])])
    got, ok, failed = run(ModelSpec("reshape", model), src)
    assert (ok, failed) == (2, 1)
    assert [o["shape"] for r in (got[0], got[2]) for o in r["outputs"]] == [[2, 2], [1, 4]]  # type: ignore[attr-defined]
    assert isinstance(got[1]["error"], str) and got[1]["error"]


def test_lines_the_app_cannot_take_are_answered_by_the_route(tiny_embed_model: Path, tmp_path: Path) -> None:
    # "\ud800" is valid JSON but no UTF-8 text: it is sent escaped, as the line wrote it. A token id past
    # int64 is valid JSON too. Whatever the route does with them (an exception in the app included), its
    # answer is the line's, in the route's shape, and the next line is served.
    spec = ModelSpec("tiny-embed-predict", tiny_embed_model)
    src = tmp_path / "in.jsonl"
    src.write_text('{"input": "\\ud800"}\n{"input": [[2, 99999999999999999999]]}\n{"input": "after them"}\n')
    got, ok, failed = run(spec, src, concurrency=1)
    assert (ok, failed) == (1, 2)
    for row in got[:2]:
        assert set(row["error"]) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    assert got[2]["object"] == "list"


def mlp_lines(tmp_path: Path, count: int) -> tuple[ModelSpec, Path, np.ndarray]:
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3], w.flatten().tolist())],
    )
    model = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    rows: list[object] = [{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [i] * 4}]}
                          for i in range(count)]
    return ModelSpec("mm", model), lines(tmp_path / "in.jsonl", rows), w


def test_the_runs_own_429s_are_retried(tmp_path: Path) -> None:
    # A queue of one request and 32 lines in flight: the batcher refuses most of them with 429, which
    # predict waits out; every line gets its real answer, in order.
    spec, src, w = mlp_lines(tmp_path, 100)
    got, ok, failed = run(spec, src, concurrency=32, settings=ServerSettings(max_queue=1, access_log=False))
    assert (ok, failed) == (100, 0)
    for i, row in enumerate(got):
        np.testing.assert_allclose(row["outputs"][0]["data"], (np.full((1, 4), i, np.float32) @ w).ravel())  # type: ignore[index]


def test_a_429_with_nothing_else_in_flight_is_the_lines_answer(tmp_path: Path) -> None:
    spec, src, _ = mlp_lines(tmp_path, 2)
    got, ok, failed = run(spec, src, concurrency=1, settings=ServerSettings(max_queue=0, access_log=False))
    assert (ok, failed) == (0, 2)
    assert "requests queued (the limit)" in str(got[0]["error"])


def test_rerank_lines_for_a_cross_encoder(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    docs = ["the capital of france is paris", "a quick brown fox", "the weather today is sunny"]
    rows: list[object] = [{"query": "where is paris", "documents": docs, "top_n": 2},
                          {"input": "a quick brown fox"},  # the same model's /v1/classify
                          {"custom_id": "r1", "body": {"query": "sunny weather", "documents": docs}},
                          {"custom_id": "r2", "method": "POST", "url": "/v1/rerank",
                           "body": {"query": "a fox", "documents": docs, "top_n": 1}}]  # fmt: skip
    got, ok, failed = run(ModelSpec("tiny-cross", tiny_cross_encoder), lines(tmp_path / "in.jsonl", rows))
    assert (ok, failed) == (4, 0)
    with Server([ModelSpec("tiny-cross", tiny_cross_encoder)], port=0) as s:
        want = httpx.post(s.url + "/v1/rerank", json={"model": "tiny-cross", **rows[0]}, timeout=30).json()  # type: ignore[dict-item]
    assert got[0]["results"] == want["results"] and len(want["results"]) == 2
    assert "data" in got[1]
    batch = got[2]["response"]
    assert isinstance(batch, dict) and batch["status_code"] == 200 and len(batch["body"]["results"]) == 3
    named = got[3]["response"]  # a Batch API line that names the route
    assert isinstance(named, dict) and named["status_code"] == 200 and len(named["body"]["results"]) == 1
