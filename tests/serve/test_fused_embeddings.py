"""A pooling export with a fused tokenizer (strings in) on /v1/embeddings, next to its plain export.

The tiny BERT here has a real WordPiece ``BertTokenizer`` (onnxruntime-extensions fuses it; the
session-wide ``tiny_embed_model`` has a generic fast tokenizer, which it cannot fuse).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from onnxkit.models.folder import model_kind
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

MAX_LENGTH = 32
SENTENCES = [
    "The capital of France is Paris.",
    "A quick brown fox jumps over the lazy dog.",
    "Quantum computers use qubits to represent information.",
    "The weather today is sunny with a light breeze.",
]
# Varied lengths, words outside the vocabulary (split into ##pieces), accents and case.
TEXTS = [
    "paris",
    "The weather today is sunny with a light breeze, in Paris and in France.",
    "qubits",
    "Zebras quietly vex jumbled wizards",
    "Café au lait",
    "a quick brown fox",
]
LONG = "the quick brown fox jumps over the lazy dog " * 8  # 74 tokens with [CLS] and [SEP]


@dataclass(frozen=True)
class Exports:
    plain: Path
    fused: Path


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    """A 2-layer random BERT (WordPiece vocab.txt, BertTokenizer) exported plain and fused."""
    import torch
    import transformers

    from onnxkit.export import export

    root = tmp_path_factory.mktemp("fused-embed")
    hf = root / "hf"
    hf.mkdir()
    words = sorted({w.strip(".,").lower() for s in SENTENCES for w in s.split()})
    chars = sorted({c for w in words for c in w} | set("zvxjmw"))
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = list(dict.fromkeys([*special, *words, ",", ".", *chars, *(f"##{c}" for c in chars)]))
    (hf / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizer(vocab_file=str(hf / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = MAX_LENGTH
    tokenizer.save_pretrained(str(hf))
    assert json.loads((hf / "tokenizer_config.json").read_text())["tokenizer_class"] == "BertTokenizer"
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(str(hf))
    plain = export(hf, "pooling", root / "plain")
    fused = export(hf, "pooling", root / "fused", fuse_tokenizer=True)
    return Exports(plain, fused)


@pytest.fixture(scope="module")
def server(exports: Exports) -> Iterator[Server]:
    with Server([ModelSpec("fused", exports.fused), ModelSpec("plain", exports.plain)], port=0) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _vectors(client: openai.OpenAI, model: str, texts: str | list[str], **kw: Any) -> np.ndarray:
    return np.array([d.embedding for d in client.embeddings.create(model=model, input=texts, **kw).data])


def _fused_graph(folder: Path, texts: list[str]) -> np.ndarray:
    """The fused graph run directly, outside the server."""
    import onnxruntime as ort

    from onnxkit.export.fuse import session_options

    sess = ort.InferenceSession(str(folder / "model.onnx"), session_options(), providers=["CPUExecutionProvider"])
    out: np.ndarray = sess.run(None, {"text": np.array(texts, dtype=object)})[0]
    return out


def test_fused_pooling_export_is_an_embeddings_model(exports: Exports, server: Server, tmp_path: Path) -> None:
    card = json.loads((exports.fused / "onnxkit.json").read_text())
    assert card["fused_tokenizer"] is True and card["task"] == "pooling" and card["max_length"] == MAX_LENGTH
    assert card["inputs"] == [{"name": "text", "dtype": "string", "shape": ["batch"]}]
    assert (exports.fused / "tokenizer.json").is_file()  # the server counts tokens with it
    assert model_kind(exports.fused) == "embeddings"
    listed = {m["id"]: m["task"] for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert listed == {"fused": "embeddings", "plain": "embeddings"}
    # other fused tasks stay tensor models (KServe v2 / TF-Serving only)
    (tmp_path / "onnxkit.json").write_text(json.dumps({"task": "text-classification", "fused_tokenizer": True}))
    assert model_kind(tmp_path) == "tensor"


def test_float_and_base64_equal_the_plain_export(client: openai.OpenAI, server: Server, exports: Exports) -> None:
    plain = client.embeddings.create(model="plain", input=TEXTS, encoding_format="float")
    fused = client.embeddings.create(model="fused", input=TEXTS, encoding_format="float")
    want = np.array([d.embedding for d in plain.data])
    got = np.array([d.embedding for d in fused.data])
    assert got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert [d.index for d in fused.data] == list(range(len(TEXTS)))
    assert fused.model == "fused"
    # usage counts tokens, special tokens included, as the plain export does
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(exports.fused / "tokenizer.json"))
    counted = sum(len(tokenizer.encode(t).ids) for t in TEXTS)
    assert fused.usage.prompt_tokens == fused.usage.total_tokens == plain.usage.prompt_tokens == counted
    assert counted > 3 * len(TEXTS)
    # the SDK's default: base64 on the wire, decoded by the SDK
    np.testing.assert_allclose(_vectors(client, "fused", TEXTS), want, atol=1e-5)
    raw = httpx.post(server.url + "/v1/embeddings",
                     json={"model": "fused", "input": TEXTS[1], "encoding_format": "base64"}).json()  # fmt: skip
    vec = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, want[1], atol=1e-5)


def test_concurrent_requests_each_get_their_own_vectors(client: openai.OpenAI) -> None:
    requests: list[list[str]] = [[t] for t in TEXTS] + [TEXTS[i : i + 3] for i in range(len(TEXTS) - 2)]
    requests *= 3
    want = {t: v for t, v in zip(TEXTS, _vectors(client, "plain", TEXTS, encoding_format="float"), strict=True)}
    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(lambda texts: _vectors(client, "fused", texts), requests))
    for texts, got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, np.array([want[t] for t in texts]), atol=1e-5)


def test_token_ids_are_refused_with_text_expected(client: openai.OpenAI) -> None:
    for ids in ([2, 10, 11, 3], [[2, 10, 3], [2, 11, 3]]):
        with pytest.raises(openai.BadRequestError, match="tokenizes inside its graph and expects text") as caught:
            client.embeddings.create(model="fused", input=ids)
        assert caught.value.status_code == 400
        assert caught.value.param == "input"
        assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "invalid_request_error"
    # the plain export takes the same ids
    assert len(client.embeddings.create(model="plain", input=[2, 10, 11, 3]).data) == 1


def test_too_long_is_400_unless_truncate(client: openai.OpenAI, exports: Exports) -> None:
    for model in ("fused", "plain"):
        with pytest.raises(openai.BadRequestError, match=f"at most {MAX_LENGTH}") as caught:
            client.embeddings.create(model=model, input=["paris", LONG])
        assert caught.value.code == "context_length_exceeded" and caught.value.param == "input"
    cut = client.embeddings.create(model="fused", input=[LONG, "paris"], extra_body={"truncate": True})
    plain = client.embeddings.create(model="plain", input=[LONG, "paris"], extra_body={"truncate": True})
    # the count is the cut one: max_length tokens, plus [CLS] paris [SEP]
    assert cut.usage.prompt_tokens == plain.usage.prompt_tokens == MAX_LENGTH + 3
    got = np.array([d.embedding for d in cut.data])
    np.testing.assert_allclose(got, np.array([d.embedding for d in plain.data]), atol=1e-5)
    # what the graph computes for the long text (it cuts at max_length itself)
    np.testing.assert_allclose(got[0], _fused_graph(exports.fused, [LONG])[0], atol=1e-5)
    assert not np.allclose(got[0], got[1], atol=1e-3)


def test_kserve_v2_still_serves_the_fused_graph(server: Server, client: openai.OpenAI) -> None:
    import tritonclient.http as httpclient

    triton = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    meta = triton.get_model_metadata("fused")
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    text = httpclient.InferInput("text", [3], "BYTES")
    text.set_data_from_numpy(np.array(TEXTS[:3], dtype=object))
    served = triton.infer("fused", [text]).as_numpy(meta["outputs"][0]["name"])
    np.testing.assert_allclose(served, _vectors(client, "fused", TEXTS[:3]), atol=1e-5)
    # and plain KServe v2 JSON, BYTES as strings
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXTS[1]]}]}
    out = httpx.post(server.url + "/v2/models/fused/infer", json=body).json()["outputs"][0]
    assert out["shape"] == [1, 32]
    np.testing.assert_allclose(out["data"], served[1], atol=1e-5)
