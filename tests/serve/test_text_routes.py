"""/tokenize, /detokenize and /v1/rerank over HTTP, on the tiny models and (integration) MiniLM."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import openai
import pytest
from tokenizers import Tokenizer

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip
DOCS = [
    "The weather today is sunny with a light breeze.",
    "The capital of France is Paris.",
    "Quantum computers use qubits to represent information.",
    "A quick brown fox jumps over the lazy dog.",
]


@pytest.fixture(scope="module")
def server(tiny_chat_model: Path, tiny_embed_model: Path, tiny_cross_encoder: Path) -> Iterator[Server]:
    models = [ModelSpec("tiny-chat", tiny_chat_model), ModelSpec("tiny-embed", tiny_embed_model),
              ModelSpec("tiny-cross", tiny_cross_encoder)]  # fmt: skip
    with Server(models, port=0) as s:
        yield s


def post(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def test_tokenize_counts_what_generation_runs_on(server: Server) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]  # fmt: skip
    tok = post(server, "/tokenize", {"model": "tiny-chat", "messages": messages, "tools": [WEATHER],
                                     "return_token_strs": True}).json()  # fmt: skip
    chat = client.chat.completions.create(model="tiny-chat", messages=messages, tools=[WEATHER], max_tokens=1,  # type: ignore[arg-type,list-item]
                                          tool_choice="required")  # fmt: skip
    assert chat.usage is not None and tok["count"] == chat.usage.prompt_tokens == len(tok["tokens"])
    assert tok["max_model_len"] == 16384 and len(tok["token_strs"]) == tok["count"]
    text = post(server, "/detokenize", {"model": "tiny-chat", "tokens": tok["tokens"]}).json()["prompt"]
    # the fallback rendering: tools in the system message, the call as a block, the result as a user turn
    assert '"get_weather"' in text and "<tool_call>" in text and "<tool_response>\nsunny\n</tool_response>" in text
    assert "".join(tok["token_strs"]) == text
    prompt = post(server, "/tokenize", {"model": "tiny-chat", "prompt": "Once upon a time"}).json()
    done = client.completions.create(model="tiny-chat", prompt="Once upon a time", max_tokens=1)
    assert done.usage is not None and prompt["count"] == done.usage.prompt_tokens


def test_tokenize_an_embeddings_model(server: Server, tiny_embed_model: Path) -> None:
    text = "the capital of france is paris"
    with_special = post(server, "/tokenize", {"model": "tiny-embed", "prompt": text}).json()
    plain = post(server, "/tokenize", {"model": "tiny-embed", "prompt": text, "add_special_tokens": False,
                                       "return_token_strs": True}).json()  # fmt: skip
    ref = Tokenizer.from_file(str(tiny_embed_model / "tokenizer.json"))
    assert with_special["tokens"] == ref.encode(text).ids and with_special["count"] == plain["count"] + 2
    assert plain["token_strs"] == ref.encode(text, add_special_tokens=False).tokens
    back = post(server, "/detokenize", {"model": "tiny-embed", "tokens": with_special["tokens"]}).json()["prompt"]
    assert "capital" in back and "[CLS]" in back


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/tokenize", {"model": "tiny-chat"}, "either \"prompt\""),
        ("/tokenize", {"model": "tiny-chat", "prompt": "x", "add_special_tokens": False}, "leave add_special_tokens"),
        ("/tokenize", {"model": "tiny-embed", "messages": [{"role": "user", "content": "x"}]}, "no chat template"),
        ("/tokenize", {"model": "tiny-cross", "prompt": "x"}, "needs a chat or embeddings model"),
        ("/detokenize", {"model": "tiny-chat", "tokens": [1, 10**6]}, "outside model 'tiny-chat'"),
        ("/v1/rerank", {"model": "tiny-chat", "query": "q", "documents": ["d"]},
         "needs a text-classification or embeddings model"),
        ("/v1/rerank", {"model": "tiny-cross", "query": "q", "documents": []}, "documents is empty"),
        ("/v1/rerank", {"model": "tiny-cross", "query": "q", "documents": [{"body": "x"}]}, 'or {"text"'),
        ("/v1/rerank", {"model": "tiny-cross", "query": "q", "documents": ["d"], "rank_fields": ["a"]},
         "rank_fields is not a field"),
    ],
)  # fmt: skip
def test_bad_requests_are_400(server: Server, path: str, body: dict[str, Any], fragment: str) -> None:
    r = post(server, path, body)
    assert r.status_code == 400 and fragment in r.json()["error"]["message"], r.text


def direct_scores(folder: Path, query: str, documents: list[str]) -> np.ndarray:
    """The cross-encoder's sigmoid(logit) per pair, from onnxruntime directly."""
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    out = []
    for doc in documents:
        enc = tok.encode(query, doc)
        feeds = {"input_ids": [enc.ids], "attention_mask": [enc.attention_mask], "token_type_ids": [enc.type_ids]}
        logit = session.run(None, {k: np.array(v, dtype=np.int64) for k, v in feeds.items() if k in names})[0]
        out.append(1 / (1 + np.exp(-float(np.asarray(logit).reshape(-1)[0]))))
    return np.array(out)


def test_rerank_with_a_cross_encoder(server: Server, tiny_cross_encoder: Path) -> None:
    query = "where is paris"
    r = post(server, "/v1/rerank", {"model": "tiny-cross", "query": query, "documents": DOCS, "top_n": 3,
                                    "return_documents": True})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    want = direct_scores(tiny_cross_encoder, query, DOCS)
    order = list(np.argsort(-want, kind="stable")[:3])
    assert [x["index"] for x in body["results"]] == order
    assert [x["relevance_score"] for x in body["results"]] == pytest.approx(list(want[order]), abs=1e-5)
    assert [x["document"]["text"] for x in body["results"]] == [DOCS[i] for i in order]
    assert body["usage"]["total_tokens"] > 0


def test_rerank_with_an_embeddings_model_is_cosine(server: Server) -> None:
    query = "where is paris"
    r = post(server, "/v1/rerank", {"model": "tiny-embed", "query": query, "documents": [{"text": d} for d in DOCS]})
    vectors = np.array([d["embedding"] for d in post(server, "/v1/embeddings", {"model": "tiny-embed",
                        "input": [query, *DOCS]}).json()["data"]])  # fmt: skip
    cosines = vectors[1:] @ vectors[0] / (np.linalg.norm(vectors[1:], axis=1) * np.linalg.norm(vectors[0]))
    results = r.json()["results"]
    assert [x["index"] for x in results] == list(np.argsort(-cosines, kind="stable"))
    assert [x["relevance_score"] for x in results] == pytest.approx(sorted(cosines, reverse=True), abs=1e-5)
    assert "document" not in results[0]


@pytest.mark.integration
def test_minilm_ranks_real_sentences(default_model: Callable[[str], Path]) -> None:
    documents = [
        "Bananas are a good source of potassium.",
        "The Eiffel Tower is a wrought-iron tower in Paris, France.",
        "Python is a popular programming language.",
        "Mount Everest is the highest mountain above sea level.",
    ]
    with Server([ModelSpec("minilm", default_model("all-minilm-l6-v2"))], port=0) as s:
        def best(query: str) -> int:
            r = post(s, "/v1/rerank", {"query": query, "documents": documents, "top_n": 1})
            return int(r.json()["results"][0]["index"])

        assert best("Where is the Eiffel Tower?") == 1
        assert best("Which fruit has a lot of potassium?") == 0
        assert best("What is the tallest mountain on Earth?") == 3
        assert best("Which language do programmers write code in?") == 2
