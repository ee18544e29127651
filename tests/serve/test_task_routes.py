"""/v1/classify and /v1/qa on tiny random BERT exports (text-classification, zero-shot, QA)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

SENTIMENT = {0: "negative", 1: "neutral", 2: "positive"}
WORDS = [
    "the", "capital", "of", "france", "is", "paris", "a", "quick", "brown", "fox", "jumps", "over", "lazy",
    "dog", "what", "where", "who", "this", "example", "about", "sports", "politics", "weather", "today",
    "sunny", "with", "light", "breeze",
]  # fmt: skip  # the tiny models' vocabulary (tests/conftest.py)


@pytest.fixture(scope="module")
def exports(task_exports: dict[str, Path]) -> dict[str, Path]:
    return task_exports


@pytest.fixture(scope="module")
def server(exports: dict[str, Path]) -> Iterator[Server]:
    with Server([ModelSpec(n, p) for n, p in exports.items()], port=0) as s:
        yield s


def _post(server: Server, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def _direct_logits(folder: Path, text: str, pair: str | None = None) -> np.ndarray:
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    enc = tok.encode(text, pair) if pair is not None else tok.encode(text)
    feeds = {
        "input_ids": np.array([enc.ids], dtype=np.int64),
        "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
    }
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    logits = sess.run(["logits"], {k: v for k, v in feeds.items() if k in names})[0]
    row: np.ndarray = np.asarray(logits[0], dtype=np.float64)
    return row


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    out: np.ndarray = e / e.sum()
    return out


def test_classify_matches_onnxruntime(server: Server, exports: dict[str, Path]) -> None:
    texts = ["the capital of france is paris", "a quick brown fox jumps over the lazy dog"]
    r = _post(server, "/v1/classify", {"model": "tiny-cls", "input": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "tiny-cls" and body["usage"]["prompt_tokens"] > 2
    for i, (text, item) in enumerate(zip(texts, body["data"], strict=True)):
        assert item["index"] == i
        scores = {x["label"]: x["score"] for x in item["labels"]}
        assert set(scores) == set(SENTIMENT.values())
        assert [x["score"] for x in item["labels"]] == sorted(scores.values(), reverse=True)
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
        expected = _softmax(_direct_logits(exports["tiny-cls"], text))
        for idx, label in SENTIMENT.items():
            assert scores[label] == pytest.approx(expected[idx], abs=1e-5)
    top = _post(server, "/v1/classify", {"input": texts[0], "top_k": 1}).json()  # default model
    assert [x["label"] for x in top["data"][0]["labels"]] == [body["data"][0]["labels"][0]["label"]]


def test_zero_shot(server: Server, exports: dict[str, Path]) -> None:
    labels = ["sports", "politics", "weather"]
    text = "the weather today is sunny"
    r = _post(server, "/v1/classify", {"model": "tiny-nli", "input": text, "candidate_labels": labels})
    assert r.status_code == 200, r.text
    got = {x["label"]: x["score"] for x in r.json()["data"][0]["labels"]}
    assert set(got) == set(labels) and sum(got.values()) == pytest.approx(1.0, abs=1e-5)
    entail = np.array([_direct_logits(exports["tiny-nli"], text, f"This example is {lb}.")[2] for lb in labels])
    np.testing.assert_allclose([got[lb] for lb in labels], _softmax(entail), atol=1e-5)

    multi = _post(server, "/v1/classify", {"model": "tiny-nli", "input": [text], "candidate_labels": labels,
                                           "multi_label": True, "hypothesis_template": "It is about {}."})
    for x in multi.json()["data"][0]["labels"]:
        logits = _direct_logits(exports["tiny-nli"], text, f"It is about {x['label']}.")
        assert x["score"] == pytest.approx(_softmax(logits[[0, 2]])[1], abs=1e-5)

    missing = _post(server, "/v1/classify", {"model": "tiny-nli", "input": text})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "candidate_labels"
    assert "candidate_labels" in missing.json()["error"]["message"]
    fixed = _post(server, "/v1/classify", {"model": "tiny-cls", "input": text, "candidate_labels": labels})
    assert fixed.status_code == 400 and "candidate_labels" in fixed.json()["error"]["message"]


def test_qa_answer_is_a_span_of_the_context(server: Server) -> None:
    context = "The capital of France is Paris. A quick brown fox jumps over the lazy dog."
    r = _post(server, "/v1/qa", {"model": "tiny-qa", "question": "What is the capital of France?", "context": context})
    assert r.status_code == 200, r.text
    (item,) = r.json()["data"]
    assert 0 <= item["start"] < item["end"] <= len(context)
    assert item["answer"] == context[item["start"] : item["end"]] and item["answer"]
    assert 0.0 < item["score"] <= 1.0
    many = _post(server, "/v1/qa", {"question": ["who is this", "where is paris"], "context": [context, "paris"]})
    assert many.status_code == 200, many.text
    answers = many.json()["data"]
    assert [a["index"] for a in answers] == [0, 1]
    assert answers[1]["answer"] == "paris"
    uneven = _post(server, "/v1/qa", {"question": ["a", "b"], "context": [context]})
    assert uneven.status_code == 400


def _best_span(enc: Any, start_logits: np.ndarray, end_logits: np.ndarray) -> tuple[float, int, int]:
    """The reference answer of one window: (score, start char, end char), as tasks/qa.py defines it."""
    pos = [t for t, seq in enumerate(enc.sequence_ids) if seq == 1 and enc.offsets[t][1] > enc.offsets[t][0]]
    ps, pe = _softmax(start_logits[pos]), _softmax(end_logits[pos])
    best = (-1.0, 0, 0)
    for i in range(len(pos)):
        for j in range(i, min(len(pos), i + 30)):
            if ps[i] * pe[j] > best[0]:
                best = (float(ps[i] * pe[j]), enc.offsets[pos[i]][0], enc.offsets[pos[j]][1])
    return best


def test_qa_reads_a_long_context_in_windows(server: Server, exports: dict[str, Path]) -> None:
    folder = exports["tiny-qa"]
    max_length = int(json.loads((folder / "onnxkit.json").read_text())["max_length"])
    question = "where is paris"
    contexts = [" ".join(WORDS[(k * 7 + i) % len(WORDS)] for i in range(3 * max_length)) for k in range(6)]
    r = _post(server, "/v1/qa", {"model": "tiny-qa", "question": [question] * 6, "context": contexts})
    assert r.status_code == 200, r.text

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length, stride=max_length // 4, strategy="only_second")
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    beyond_first_window = 0
    for context, item in zip(contexts, r.json()["data"], strict=True):
        enc = tok.encode(question, context)
        windows = [enc, *enc.overflowing]
        assert len(windows) >= 3
        spans = []
        for w in windows:
            feeds = {"input_ids": [w.ids], "attention_mask": [w.attention_mask], "token_type_ids": [w.type_ids]}
            start, end = sess.run(["start_logits", "end_logits"], {k: np.array(v, np.int64) for k, v in feeds.items()})
            spans.append(_best_span(w, np.asarray(start[0], np.float64), np.asarray(end[0], np.float64)))
        score, start_char, end_char = max(spans)
        assert (item["start"], item["end"]) == (start_char, end_char)
        assert item["score"] == pytest.approx(score, abs=1e-5)
        first_window_end = max(o[1] for o, seq in zip(enc.offsets, enc.sequence_ids, strict=True) if seq == 1)
        beyond_first_window += item["start"] >= first_window_end
    assert beyond_first_window > 0  # answers a truncating server could never give


def test_qa_context_over_the_window_limit_is_400(server: Server) -> None:
    from onnxkit.tasks.qa import MAX_WINDOWS

    context = " ".join(["paris"] * 64 * MAX_WINDOWS)
    r = _post(server, "/v1/qa", {"model": "tiny-qa", "question": "where", "context": context})
    assert r.status_code == 400
    assert f"at most {MAX_WINDOWS}" in r.json()["error"]["message"]


def test_wrong_task_and_unknown_model(server: Server) -> None:
    r = _post(server, "/v1/qa", {"model": "tiny-cls", "question": "who", "context": "paris"})
    assert r.status_code == 400 and "text-classification" in r.json()["error"]["message"]
    r = _post(server, "/v1/classify", {"model": "tiny-qa", "input": "paris"})
    assert r.status_code == 400 and "question-answering" in r.json()["error"]["message"]
    r = _post(server, "/v1/classify", {"model": "nope", "input": "paris"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    listed = {m["id"]: m["task"] for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert listed == {"tiny-cls": "text-classification", "tiny-nli": "zero-shot-classification",
                      "tiny-qa": "question-answering"}


def test_kserve_still_serves_the_graph(server: Server, exports: dict[str, Path]) -> None:
    tok = Tokenizer.from_file(str(exports["tiny-cls"] / "tokenizer.json"))
    enc = tok.encode("the capital of france is paris")
    n = len(enc.ids)
    inputs = [
        {"name": name, "shape": [1, n], "datatype": "INT64", "data": values}
        for name, values in (("input_ids", enc.ids), ("attention_mask", [1] * n), ("token_type_ids", [0] * n))
    ]
    r = httpx.post(server.url + "/v2/models/tiny-cls/infer", json={"inputs": inputs}, timeout=30)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    np.testing.assert_allclose(out["data"], _direct_logits(exports["tiny-cls"], "the capital of france is paris"),
                               atol=1e-5)
