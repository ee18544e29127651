"""Fixtures for the tensor-serving tests: tiny models and Triton-layout repositories."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensor_fixtures import (
    MLP_CONFIG,
    RepoFactory,
    Served,
    fp16_model,
    int_model,
    mlp,
    string_model,
)

from onnxkit.serve.server import Server


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tensor-models")
    return {
        "mlp": mlp(root / "mlp.onnx"),
        "mlp2": mlp(root / "mlp2.onnx", scale=2.0),
        "ints": int_model(root / "ints.onnx"),
        "strings": string_model(root / "strings.onnx"),
        "half": fp16_model(root / "half.onnx"),
    }


@pytest.fixture
def make_repository(tmp_path: Path, model_files: dict[str, Path]) -> RepoFactory:
    """A Triton-layout repository: make_repository(mlp=[1], ints=[1], configs={"mlp": "yaml text"})."""

    def make(configs: dict[str, str] | None = None, **models: list[int]) -> Path:
        root = tmp_path / "repo"
        for name, versions in models.items():
            for v in versions:
                dest = root / name / str(v)
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(model_files[name.split("_")[0]], dest / "model.onnx")
        for name, text in (configs or {}).items():
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / "config.yaml").write_text(text)
        return root

    return make


@pytest.fixture(scope="session")
def shared_repository(tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path]) -> Path:
    """mlp (v1, v2 = 2x), ints, strings, half, and a corrupt model 'broken'."""
    root = tmp_path_factory.mktemp("shared-repo")
    for name, versions in {"mlp": ["1"], "ints": ["1"], "strings": ["1"], "half": ["1"]}.items():
        for v in versions:
            (root / name / v).mkdir(parents=True)
            shutil.copy(model_files[name], root / name / v / "model.onnx")
    (root / "mlp" / "2").mkdir()
    shutil.copy(model_files["mlp2"], root / "mlp" / "2" / "model.onnx")
    (root / "mlp" / "config.yaml").write_text(MLP_CONFIG + "version_policy: all\n")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    return root


@pytest.fixture(scope="session")
def served(shared_repository: Path) -> Iterator[Served]:
    """One server over the shared repository: HTTP and gRPC on port 0 (the server says which ports)."""
    with Server([], port=0, repositories=(str(shared_repository),), grpc_port=0) as s:
        assert s.grpc_port
        yield Served(s.url, s.port, s.grpc_port)
