"""Class 8: an error after the 200 ends the stream properly: an SSE error event, then [DONE]."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from onnxkit.serve.server import Server


def test_a_model_unloaded_mid_stream_ends_with_an_error_event(tiny_chat_model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_chat_model, repo / "chat" / "1")
    with Server([], port=0, repositories=(str(repo),), model_control="explicit", access_log=False) as s:
        body = {"model": "chat", "messages": [{"role": "user", "content": "tell a story"}], "max_tokens": 15000,
                "temperature": 0, "stream": True}  # fmt: skip
        lines: list[str] = []
        unloaded = threading.Event()

        def unload_soon() -> None:
            time.sleep(0.3)
            assert httpx.post(s.url + "/v2/repository/models/chat/unload", timeout=60).status_code == 200
            unloaded.set()

        threading.Thread(target=unload_soon, daemon=True).start()
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            lines = [line for line in r.iter_lines() if line]
        assert unloaded.wait(30)
    events = [line.removeprefix("data: ") for line in lines]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "unloaded" in error["message"] and error["type"] == "server_error"
    assert len(events) > 3  # tokens came before the error


def test_the_openai_sdk_raises_on_the_error_event(tiny_chat_model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_chat_model, repo / "chat" / "1")
    with Server([], port=0, repositories=(str(repo),), model_control="explicit", access_log=False) as s:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "a story"}], max_tokens=15000, temperature=0,
            stream=True,
        )  # fmt: skip
        threading.Timer(0.3, lambda: httpx.post(s.url + "/v2/repository/models/chat/unload", timeout=60)).start()
        with pytest.raises(openai.APIError, match="unloaded"):
            for _ in stream:
                pass
