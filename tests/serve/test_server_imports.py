"""The serving process never imports torch or transformers (start-up time and memory; DESIGN.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "sentence_transformers", "onnxruntime_extensions")

SERVE_BOTH = """
import json, sys
import httpx
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

chat, embed = sys.argv[1], sys.argv[2]
models = [ModelSpec("chat", __import__("pathlib").Path(chat)), ModelSpec("embed", __import__("pathlib").Path(embed))]
with Server(models, port=0, access_log=False) as s:
    r1 = httpx.post(s.url + "/v1/chat/completions", timeout=120,
                    json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    r2 = httpx.post(s.url + "/v1/embeddings", json={"input": ["a sentence"]}, timeout=120)
    statuses = [r1.status_code, r2.status_code]
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3:]))
print(json.dumps({"statuses": statuses, "heavy": heavy}))
"""


def test_serve_help_imports_neither() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "onnxkit", "serve", "--help"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "onnxkit" in imported  # the report is what we think it is
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.integration
def test_a_running_server_with_both_default_models_imports_neither(default_model: Callable[[str], Path]) -> None:
    chat, embed = default_model("smollm2-135m-instruct"), default_model("all-minilm-l6-v2")
    done = subprocess.run(
        [sys.executable, "-c", SERVE_BOTH, str(chat), str(embed), *HEAVY],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["statuses"] == [200, 200]
    assert report["heavy"] == []
