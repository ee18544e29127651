"""Chat models loaded in-process (no server): the task layer through its public methods."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onnxkit.runtime.metrics import Metrics
from onnxkit.settings import ServerSettings
from onnxkit.tasks.chat import ChatModel


@pytest.fixture(scope="module")
def tiny_chat(tiny_chat_model: Path) -> Iterator[ChatModel]:
    model = ChatModel("tiny-chat", "1", tiny_chat_model, ServerSettings(chat_gather_ms=0),
                      Metrics().recorder("tiny-chat", "1"))  # fmt: skip
    yield model
    asyncio.run(model.close())


@pytest.fixture(scope="module")
def smollm(default_model: Callable[[str], Path]) -> Iterator[ChatModel]:
    path = default_model("smollm2-135m-instruct")
    model = ChatModel("smollm2", "1", path, ServerSettings(chat_gather_ms=0), Metrics().recorder("smollm2", "1"))
    yield model
    asyncio.run(model.close())
