from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from supply_helpers import FileServer, sha, tar_gz_bytes, tiny_onnx, zip_bytes

from onnxkit.errors import ChecksumMismatch, InvalidRequest, ModelNotFound, SupplyError
from onnxkit.models.cache import Cache
from onnxkit.models.supply import model_name, pull, resolve


def _run(path: Path) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([2.0], dtype=np.float32)})
    return float(y[0])


def test_pull_single_onnx(server: FileServer, cache: Cache) -> None:
    body = tiny_onnx()
    url = server.serve("/models/adder.onnx", body)
    model = pull(url, cache, sha256=sha(body), progress=False)
    assert model.name == "adder"
    assert model.manifest.task == "tensor" and model.manifest.format == "onnx"
    assert model.manifest.source == url
    assert model.manifest.extra["download_sha256"] == sha(body)
    assert model.manifest.files == {"model.onnx": sha(body)}
    assert _run(model.path / "model.onnx") == 3.0
    assert [m.name for m in cache.list()] == ["adder"]


def test_pulling_again_is_a_no_op(server: FileServer, cache: Cache) -> None:
    url = server.serve("/adder.onnx", tiny_onnx())
    first = pull(url, cache, progress=False)
    second = pull(url, cache, progress=False)
    assert second.manifest.created == first.manifest.created
    assert len(server.state.requests) == 1
    pull(url, cache, force=True, progress=False)
    assert len(server.state.requests) == 2


def test_a_name_taken_by_another_url_is_not_reused(server: FileServer, cache: Cache) -> None:
    first = server.serve("/a/adder.onnx", tiny_onnx())
    second = server.serve("/b/adder.onnx", tiny_onnx())
    pull(first, cache, progress=False)
    with pytest.raises(SupplyError, match=re.escape(f"already cached from {first}, not {second}")):
        pull(second, cache, progress=False)
    assert pull(second, cache, name="adder-b", progress=False).manifest.source == second
    assert pull(second, cache, force=True, progress=False).manifest.source == second


def test_checksum_mismatch_leaves_cache_unchanged(server: FileServer, cache: Cache) -> None:
    pull(server.serve("/kept.onnx", tiny_onnx()), cache, progress=False)
    before = sorted(p.relative_to(cache.root) for p in cache.root.rglob("*"))
    url = server.serve("/other.onnx", tiny_onnx())
    with pytest.raises(ChecksumMismatch) as info:
        pull(url, cache, sha256="ab" * 32, progress=False)
    assert "ab" * 32 in info.value.message and sha(tiny_onnx()) in info.value.message
    assert cache.get("other") is None
    assert [m.name for m in cache.list()] == ["kept"]
    assert sorted(p.relative_to(cache.root) for p in cache.root.rglob("*")) == before


def test_interrupted_pull_resumes(server: FileServer, cache: Cache) -> None:
    body = tiny_onnx()
    url = server.serve("/adder.onnx", body)
    server.state.cut_after["/adder.onnx"] = len(body) // 2
    model = pull(url, cache, sha256=sha(body), progress=False)
    assert server.ranges("/adder.onnx") == [None, f"bytes={len(body) // 2}-"]
    assert model.manifest.files["model.onnx"] == sha(body)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_pull_archive_with_card(server: FileServer, cache: Cache, kind: str) -> None:
    files = {
        "encoder/model.onnx": tiny_onnx(),
        "encoder/tokenizer.json": b"{}",
        "encoder/onnxkit.json": json.dumps({"task": "pooling"}).encode(),
    }
    data = zip_bytes(files) if kind == "zip" else tar_gz_bytes(files)
    url = server.serve(f"/dl/encoder.{kind}", data)
    model = pull(url, cache, name="enc", progress=False)
    assert model.name == "enc"
    assert model.manifest.task == "embeddings"  # the exporter's "pooling" is served as embeddings
    assert model.manifest.extra["card_task"] == "pooling"
    assert set(model.manifest.files) == {"model.onnx", "tokenizer.json", "onnxkit.json"}
    assert _run(model.path / "model.onnx") == 3.0


def test_archive_with_genai_config_is_a_chat_model(server: FileServer, cache: Cache) -> None:
    files = {"model.onnx": tiny_onnx(), "genai_config.json": b"{}", "tokenizer.json": b"{}"}
    model = pull(server.serve("/chatty.tar.gz", tar_gz_bytes(files)), cache, progress=False)
    assert (model.name, model.manifest.task, model.manifest.format) == ("chatty", "chat", "genai")


def test_archive_without_onnx_is_refused(server: FileServer, cache: Cache) -> None:
    url = server.serve("/empty.zip", zip_bytes({"README.md": b"hi"}))
    with pytest.raises(SupplyError, match=r"holds no \.onnx file"):
        pull(url, cache, progress=False)
    assert cache.list() == []


def test_archive_path_traversal_is_refused(server: FileServer, cache: Cache) -> None:
    url = server.serve("/evil.zip", zip_bytes({"model.onnx": tiny_onnx(), "../../escape.txt": b"x"}))
    with pytest.raises(SupplyError, match="points outside the model folder"):
        pull(url, cache, progress=False)
    assert cache.list() == []
    assert not list(cache.root.parent.rglob("escape.txt"))


def test_not_onnx_is_refused(server: FileServer, cache: Cache) -> None:
    url = server.serve("/page.onnx", b"<html>not a model</html>")
    with pytest.raises(SupplyError, match="neither an ONNX model nor"):
        pull(url, cache, progress=False)
    assert cache.list() == []


def test_404_names_the_url(server: FileServer, cache: Cache) -> None:
    url = server.url("/nope.onnx")
    with pytest.raises(SupplyError, match=re.escape(f"GET {url} answered 404")):
        pull(url, cache, progress=False)
    assert cache.list() == []


def test_hub_fails_fast_with_a_clear_message(cache: Cache) -> None:
    # A repo that does not exist: where the hub is reachable this fails fast too (404).
    started = time.monotonic()
    with pytest.raises(SupplyError) as info:
        pull("hf:onnxkit-tests/no-such-model", cache, progress=False)
    assert time.monotonic() - started < 10
    message = info.value.message
    assert message.startswith("cannot pull hf:onnxkit-tests/no-such-model: ")
    assert "Hugging Face hub" in message and "'onnxkit-tests/no-such-model'" in message
    assert cache.list() == []


def test_bad_specs_are_refused(cache: Cache) -> None:
    with pytest.raises(InvalidRequest, match="not a catalog name"):
        pull("no-such-model", cache)
    with pytest.raises(InvalidRequest, match="hf:ORG/NAME"):
        pull("hf:lonely", cache)
    with pytest.raises(InvalidRequest, match="not a URL"):
        pull("all-minilm-l6-v2", cache, sha256="0" * 64)


def test_model_names() -> None:
    assert model_name("https://example.test/a/b/my-model.tar.gz?x=1") == "my-model"
    assert model_name("https://example.test/m.onnx", "custom") == "custom"
    assert model_name("hf:org/repo") == "repo"
    assert model_name("hf:org/repo/onnx") == "repo-onnx"
    assert model_name("all-minilm-l6-v2") == "all-minilm-l6-v2"
    assert model_name("http://example.test/x/%2E%2E%2Fetc.onnx") == "etc"  # never a path


def test_url_spelling_dot_dot_stays_inside_the_cache(server: FileServer, cache: Cache) -> None:
    url = server.serve("/x/%2E%2E", tiny_onnx())
    model = pull(url, cache, progress=False)
    assert model.path.parent == cache.root / "models"
    assert model.name == "model"


def test_resolve(server: FileServer, cache: Cache, tmp_path: Path) -> None:
    url = server.serve("/adder.onnx", tiny_onnx())
    pulled = resolve(url, cache)
    assert not isinstance(pulled, Path) and pulled.name == "adder"
    assert resolve(url, cache) == pulled  # cached: no second download
    assert len(server.state.requests) == 1
    assert resolve("adder", cache) == pulled
    loose = tmp_path / "loose.onnx"
    loose.write_bytes(tiny_onnx())
    assert resolve(str(loose), cache) == loose
    assert resolve(str(tmp_path), cache) == tmp_path
    with pytest.raises(ModelNotFound, match=r"'nothing'.*all-minilm-l6-v2"):
        resolve("nothing", cache)
