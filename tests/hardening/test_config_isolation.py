"""Class 9: a bad model configuration is isolated: that model is UNAVAILABLE with the reason; the rest serves."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest

from onnxkit.serve.server import Server

from .conftest import write_repository

BAD_CONFIGS = [
    "max_batch_size: [4]\n",
    "dynamic_batching: {max_queue_delay_ms: soon}\n",
    "dynamic_batching: {pad_variable_dims: maybe}\n",
    "dynamic_batching: {preferred_batch_size: [4]}\n",
    "dynamic_batching: 5\n",
    "input: 7\n",
    "execution_providers: 3\n",
    "labels: {a: b}\n",
    "version_policy: {latest: {num_versions: many}}\n",
    ": : :\n",
]


@pytest.mark.parametrize("config", BAD_CONFIGS)
def test_a_bad_config_makes_only_its_model_unavailable(tmp_path: Path, config: str) -> None:
    repo = write_repository(tmp_path / "repo")
    (repo / "mlp" / "config.yaml").write_text(config)
    with Server([], port=0, repositories=(str(repo),), access_log=False) as s:
        ready = httpx.get(s.url + "/v2/models/mlp/ready")
        assert ready.status_code == 503
        reason = ready.json()["error"]
        assert "config.yaml" in reason, reason
        index = httpx.post(s.url + "/v2/repository/index", json={}).json()
        assert {r["name"]: r["state"] for r in index}["mlp"] == "UNAVAILABLE"
        assert httpx.get(s.url + "/v2/models/words/ready").status_code == 200  # the others serve


def test_polling_goes_on_after_a_bad_config(tmp_path: Path) -> None:
    repo = write_repository(tmp_path / "repo")
    with Server([], port=0, repositories=(str(repo),), model_control="poll", repository_poll_seconds=0.2,
                access_log=False) as s:  # fmt: skip
        (repo / "mlp" / "config.yaml").write_text("max_batch_size: lots\n")
        shutil.copytree(repo / "words", repo / "words2")  # a later, unrelated change
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and httpx.get(s.url + "/v2/models/words2/ready").status_code != 200:
            time.sleep(0.2)
        assert httpx.get(s.url + "/v2/models/words2/ready").status_code == 200
        # the bad config did not take the serving version down; its reason is listed
        index = {r["name"]: r for r in httpx.post(s.url + "/v2/repository/index", json={}).json()}
        assert "expected an integer" in index["mlp"]["reason"]
        (repo / "mlp" / "config.yaml").write_text("max_batch_size: 2\n")  # fixed: loads again
        deadline = time.monotonic() + 30

        def batch() -> object:
            return httpx.get(s.url + "/v2/models/mlp/config").json().get("max_batch_size")

        while time.monotonic() < deadline and batch() != 2:
            time.sleep(0.2)
        assert batch() == 2
