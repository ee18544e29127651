"""/v1/embeddings through the openai SDK (which asks for base64 by default)."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from onnxkit.serve.server import Server


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_float_and_base64_agree_and_are_normalised(client: openai.OpenAI, server: Server) -> None:
    texts = ["the capital of france is paris", "a quick brown fox", "weather"]
    floats = client.embeddings.create(model="tiny-embed", input=texts, encoding_format="float")
    sdk = client.embeddings.create(model="tiny-embed", input=texts)  # SDK: base64 on the wire, decoded
    a = np.array([d.embedding for d in floats.data])
    b = np.array([d.embedding for d in sdk.data])
    assert a.shape == (3, 32)
    np.testing.assert_allclose(a, b, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert floats.usage.prompt_tokens > len(texts)
    import httpx

    raw = httpx.post(server.url + "/v1/embeddings",
                     json={"model": "tiny-embed", "input": texts[0], "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, a[0], atol=1e-7)


def test_batched_result_equals_single(client: openai.OpenAI) -> None:
    texts = ["paris", "the weather today is sunny with a light breeze", "qubits"]
    together = np.array([d.embedding for d in client.embeddings.create(model="tiny-embed", input=texts).data])
    alone = np.array([client.embeddings.create(model="tiny-embed", input=t).data[0].embedding for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_token_id_inputs(client: openai.OpenAI) -> None:
    ids = [2, 10, 11, 3]
    one = client.embeddings.create(model="tiny-embed", input=ids)
    many = client.embeddings.create(model="tiny-embed", input=[ids, [2, 12, 3]])
    assert len(one.data) == 1 and len(many.data) == 2
    np.testing.assert_allclose(one.data[0].embedding, many.data[0].embedding, atol=1e-5)
    assert one.usage.prompt_tokens == 4


def test_too_long_is_400_unless_truncate(client: openai.OpenAI) -> None:
    long = "paris " * 200
    with pytest.raises(openai.BadRequestError, match="at most 64"):
        client.embeddings.create(model="tiny-embed", input=long)
    ok = client.embeddings.create(model="tiny-embed", input=long, extra_body={"truncate": True})
    assert ok.usage.prompt_tokens == 64


def test_bad_inputs_are_400(client: openai.OpenAI) -> None:
    for bad in ([], [""], [1.5]):
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model="tiny-embed", input=bad)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="dimensions is 33; model 'tiny-embed' produces 32"):
        client.embeddings.create(model="tiny-embed", input="x", dimensions=33)


def test_dimensions_truncates_then_renormalises(client: openai.OpenAI) -> None:
    texts = ["the capital of france is paris", "a quick brown fox"]
    full = np.array([d.embedding for d in client.embeddings.create(model="tiny-embed", input=texts).data])
    short = client.embeddings.create(model="tiny-embed", input=texts, dimensions=8)
    got = np.array([d.embedding for d in short.data])
    want = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    assert got.shape == (2, 8)
    np.testing.assert_allclose(got, want, atol=1e-5)
    same = client.embeddings.create(model="tiny-embed", input=texts, dimensions=32)
    np.testing.assert_allclose([d.embedding for d in same.data], full, atol=1e-6)


def test_embedding_export_is_also_served_over_kserve(server: Server) -> None:
    """The same export answers KServe v2 with its raw graph (token ids in, pooled vectors out)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    meta = client.get_model_metadata("tiny-embed")
    assert {i["name"] for i in meta["inputs"]} >= {"input_ids", "attention_mask"}
    ids = np.array([[2, 10, 11, 3]], dtype=np.int64)
    inputs = []
    for spec in meta["inputs"]:
        x = httpclient.InferInput(spec["name"], list(ids.shape), "INT64")
        x.set_data_from_numpy(ids if spec["name"] == "input_ids" else
                              (np.ones_like(ids) if spec["name"] == "attention_mask" else np.zeros_like(ids)))
        inputs.append(x)
    served = client.infer("tiny-embed", inputs).as_numpy(meta["outputs"][0]["name"])
    openai_vec = openai.OpenAI(base_url=server.url + "/v1", api_key="x").embeddings.create(
        model="tiny-embed", input=[2, 10, 11, 3]).data[0].embedding
    np.testing.assert_allclose(served[0], openai_vec, atol=1e-5)


def test_embeddings_count_in_the_kserve_statistics(client: openai.OpenAI, server: Server) -> None:
    """/v1/embeddings requests are the model's inferences too: tritonclient's statistics see them."""
    import tritonclient.http as httpclient

    triton = httpclient.InferenceServerClient(server.url.removeprefix("http://"))

    def stats() -> dict[str, int]:
        (s,) = triton.get_inference_statistics("tiny-embed")["model_stats"]
        return {"inferences": int(s["inference_count"]), "ok": int(s["inference_stats"]["success"]["count"]),
                "failed": int(s["inference_stats"]["fail"]["count"])}

    before = stats()
    client.embeddings.create(model="tiny-embed", input=["one text", "two texts", "three"])
    with pytest.raises(openai.BadRequestError):  # too long: refused by the model's batch, so it counts as failed
        client.embeddings.create(model="tiny-embed", input=["paris " * 200])
    after = stats()
    assert after["inferences"] - before["inferences"] == 3
    assert (after["ok"] - before["ok"], after["failed"] - before["failed"]) == (1, 1)
