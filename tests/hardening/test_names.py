"""Class 10: two models resolving to one name are renamed or refused with a warning, never silently dropped."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import httpx
import pytest

from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

from .conftest import write_repository


def test_two_model_arguments_of_one_name_are_renamed(
    tiny_embed_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "elsewhere" / tiny_embed_model.name
    shutil.copytree(tiny_embed_model, other)
    with caplog.at_level(logging.WARNING, logger="onnxkit.server"), \
            Server([ModelSpec("embed", tiny_embed_model), ModelSpec("embed", other)], port=0,
                   access_log=False) as s:  # fmt: skip
        names = sorted(m["id"] for m in httpx.get(s.url + "/v1/models").json()["data"])
    assert names == ["embed", "embed-2"]
    assert "two models are named 'embed'" in caplog.text


def test_a_repository_model_with_a_taken_name_is_refused(
    tiny_embed_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = write_repository(tmp_path / "repo")
    second = tmp_path / "second"
    shutil.copytree(repo / "words", second / "mlp")  # a second repository with another model called mlp
    with caplog.at_level(logging.WARNING, logger="onnxkit.repository"), \
            Server([ModelSpec("words", tiny_embed_model)], port=0, repositories=(str(repo), str(second)),
                   access_log=False) as s:  # fmt: skip
        listed = {m["id"]: m["task"] for m in httpx.get(s.url + "/v1/models").json()["data"]}
        mlp_inputs = httpx.get(s.url + "/v2/models/mlp").json()["inputs"]
    assert listed["words"] == "embeddings"  # the MODEL argument kept its name; the repository's was refused
    assert [i["name"] for i in mlp_inputs] == ["x"]  # the first repository's mlp, not the second's
    assert "has the name of a model given as MODEL" in caplog.text
    assert "has the name of the model in" in caplog.text
