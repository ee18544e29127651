"""The seed's client sends "model": "": an empty or absent model means the route's one model, or its default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

from .conftest import Served

SEED_BODY = {
    "model": "",
    "messages": [{"role": "system", "content": "You are a helpful assistant."},
                 {"role": "user", "content": "Explain quantum computing in one sentence."}],
    "temperature": 0.7,
    "max_tokens": 8,
}  # fmt: skip


def test_the_seed_clients_request_gets_the_chat_model(hard_server: Served) -> None:
    r = httpx.post(hard_server.url + "/v1/chat/completions", json=SEED_BODY, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "tiny-chat"
    absent = {k: v for k, v in SEED_BODY.items() if k != "model"}
    assert httpx.post(hard_server.url + "/v1/chat/completions", json=absent, timeout=60).json()["model"] == "tiny-chat"
    done = httpx.post(hard_server.url + "/v1/completions", json={"model": "", "prompt": "Hi", "max_tokens": 4},
                      timeout=60)  # fmt: skip
    assert done.status_code == 200 and done.json()["model"] == "tiny-chat"
    emb = httpx.post(hard_server.url + "/v1/embeddings", json={"model": "", "input": "a text"}, timeout=60)
    assert emb.status_code == 200 and emb.json()["model"] == "tiny-embed"


def test_models_list_says_which_is_the_default(hard_server: Served) -> None:
    data = {m["id"]: m for m in httpx.get(hard_server.url + "/v1/models").json()["data"]}
    assert data["tiny-chat"]["default"] is True and data["tiny-embed"]["default"] is True
    assert data["mlp"]["default"] is False  # tensor models are only ever named


@pytest.fixture(scope="module")
def two_embedders(tiny_embed_model: Path) -> Iterator[tuple[Server, Server]]:
    models = [ModelSpec("embed-a", tiny_embed_model), ModelSpec("embed-b", tiny_embed_model)]
    with Server(models, port=0, access_log=False) as plain, \
            Server(models, port=0, access_log=False, default_embeddings_model="embed-b") as marked:  # fmt: skip
        yield plain, marked


def test_several_candidates_and_none_marked_is_a_400_listing_them(two_embedders: tuple[Server, Server]) -> None:
    plain, _ = two_embedders
    client = openai.OpenAI(base_url=plain.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="", input="a text")
    message = str(caught.value)
    assert "embed-a" in message and "embed-b" in message and "--default-embeddings-model" in message
    assert caught.value.param == "model"
    listed = {m["id"]: m["default"] for m in httpx.get(plain.url + "/v1/models").json()["data"]}
    assert listed == {"embed-a": False, "embed-b": False}


def test_the_marked_default_is_used_and_listed(two_embedders: tuple[Server, Server]) -> None:
    _, marked = two_embedders
    client = openai.OpenAI(base_url=marked.url + "/v1", api_key="x", max_retries=0)
    assert client.embeddings.create(model="", input="a text").model == "embed-b"
    listed = {m["id"]: m["default"] for m in httpx.get(marked.url + "/v1/models").json()["data"]}
    assert listed == {"embed-a": False, "embed-b": True}


def test_the_default_flags_are_on_the_command_line() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "onnxkit", "serve", "--help"], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert "--default-chat-model" in out and "--default-embeddings-model" in out
