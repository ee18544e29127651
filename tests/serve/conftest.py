from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server


@pytest.fixture(scope="module")
def server(tiny_chat_model: Path, tiny_embed_model: Path) -> Iterator[Server]:
    models = [ModelSpec("tiny-chat", tiny_chat_model), ModelSpec("tiny-embed", tiny_embed_model)]
    with Server(models, port=0, max_body_bytes=256 * 1024) as s:
        yield s
