"""Model repository: layout, config.yaml / --config, version policy, polling, explicit load/unload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tensor_fixtures import RepoFactory, mlp_reference, wait_until
from tritonclient.utils import InferenceServerException

from onnxkit.errors import SupplyError
from onnxkit.models.config import VersionPolicy, read_config_file, read_model_config
from onnxkit.serve.app import ModelSpec
from onnxkit.serve.server import Server

X = np.ones((1, 4), dtype=np.float32)


def index(url: str) -> dict[tuple[str, str | None], dict[str, str]]:
    rows = httpx.post(url + "/v2/repository/index").json()
    return {(r["name"], r.get("version")): r for r in rows}


def infer_mlp(url: str, model: str = "mlp", version: str = "") -> httpx.Response:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": X.ravel().tolist()}]}
    return httpx.post(url + path, json=body)


# -- config parsing ------------------------------------------------------------------------------------
def test_version_policies() -> None:
    have = ["1", "3", "10", "2"]
    assert VersionPolicy().select(have) == ["10"]
    assert VersionPolicy("latest", 2).select(have) == ["3", "10"]
    assert VersionPolicy("all").select(have) == ["1", "2", "3", "10"]
    assert VersionPolicy("specific", versions=("2", "7")).select(have) == ["2"]


def test_config_yaml_keys(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "config.yaml").write_text(
        "max_batch_size: 16\n"
        "dynamic_batching: {max_queue_delay_microseconds: 2500, max_queue_size: 7}\n"
        "version_policy: {latest: {num_versions: 2}}\n"
        "threads: 1\n"
        "execution_providers: [CPUExecutionProvider]\n"
        "input: [{name: image, source: x, dims: [4], data_type: TYPE_FP32}]\n"
        "label_filename: labels.txt\n"
    )
    cfg = read_model_config(tmp_path, "m")
    assert cfg.max_batch_size == 16 and cfg.max_queue_delay_ms == 2.5 and cfg.max_queue_size == 7
    assert cfg.version_policy == VersionPolicy("latest", 2)
    assert cfg.threads == 1 and cfg.execution_providers == ("CPUExecutionProvider",)
    assert cfg.inputs[0].name == "image" and cfg.inputs[0].source == "x" and cfg.inputs[0].dims == (4,)
    assert cfg.inputs[0].datatype == "FP32"
    assert cfg.labels == ("a", "b")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("max_batch_sise: 4\n")
    with pytest.raises(SupplyError, match="unknown keys \\['max_batch_sise'\\]"):
        read_model_config(tmp_path, "m")
    (tmp_path / "config.yaml").write_text("version_policy: {newest: 1}\n")
    with pytest.raises(SupplyError, match="version_policy"):
        read_model_config(tmp_path, "m")


def test_single_file_config(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    entry = {"name": "my_model", "base_path": "m", "model_platform": "onnxruntime", "max_batch_size": 32}
    path.write_text(json.dumps({"model_config_list": [entry]}))
    (cfg,) = read_config_file(path)
    assert cfg.name == "my_model" and cfg.max_batch_size == 32 and cfg.base_path == tmp_path / "m"
    path.write_text(json.dumps({"models": []}))
    with pytest.raises(SupplyError, match="model_config_list"):
        read_config_file(path)


# -- serving -------------------------------------------------------------------------------------------
def test_config_file_repository_and_model_arguments_together(
    tmp_path: Path, model_files: dict[str, Path], make_repository: RepoFactory
) -> None:
    repo = make_repository(ints=[1])
    base = tmp_path / "elsewhere" / "my_model"
    (base / "3").mkdir(parents=True)
    shutil.copy(model_files["mlp"], base / "3" / "model.onnx")
    config = tmp_path / "models.yaml"
    config.write_text(
        "model_config_list:\n"
        f"  - {{name: my_model, base_path: {base}, model_platform: onnxruntime, max_batch_size: 32}}\n"
    )
    extra = ModelSpec("direct", model_files["strings"])
    with Server([extra], port=0, repositories=(str(repo),), model_config_files=(str(config),)) as s:
        r = infer_mlp(s.url, "my_model")
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "3"
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], mlp_reference(X).ravel(), rtol=1e-5)
        assert httpx.get(s.url + "/v2/models/my_model/config").json()["max_batch_size"] == 32
        assert httpx.get(s.url + "/v2/models/ints/ready").status_code == 200
        assert httpx.get(s.url + "/v2/models/direct/ready").status_code == 200


def test_version_policy_latest_serves_only_the_newest(make_repository: RepoFactory) -> None:
    repo = make_repository(mlp=[1, 2, 3], configs={"mlp": "version_policy: {latest: {num_versions: 2}}\n"})
    with Server([], port=0, repositories=(str(repo),)) as s:
        assert httpx.get(s.url + "/v2/models/mlp").json()["versions"] == ["2", "3"]
        assert infer_mlp(s.url, version="1").status_code == 404


def test_input_name_and_dims_overrides(make_repository: RepoFactory) -> None:
    repo = make_repository(
        mlp=[1], configs={"mlp": "max_batch_size: 2\ninput: [{name: features, source: x, dims: [4]}]\n"}
    )
    with Server([], port=0, repositories=(str(repo),)) as s:
        meta = httpx.get(s.url + "/v2/models/mlp").json()
        assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
        body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}
        r = httpx.post(s.url + "/v2/models/mlp/infer", json=body)
        assert r.status_code == 200, r.text


def test_broken_config_lists_the_model_unavailable(make_repository: RepoFactory) -> None:
    repo = make_repository(mlp=[1], ints=[1], configs={"ints": "max_batch_size: [oops\n"})
    with Server([], port=0, repositories=(str(repo),)) as s:
        row = index(s.url)[("ints", "1")]
        assert row["state"] == "UNAVAILABLE" and "config.yaml is not valid YAML" in row["reason"]
        assert infer_mlp(s.url).status_code == 200


def test_poll_follows_the_folder(make_repository: RepoFactory, model_files: dict[str, Path], tmp_path: Path) -> None:
    repo = make_repository(mlp=[1], configs={"mlp": "version_policy: all\n"})
    settings = {"repositories": (str(repo),), "model_control": "poll", "repository_poll_seconds": 0.1}
    with Server([], port=0, **settings) as s:
        assert set(index(s.url)) == {("mlp", "1")}

        def place(model: str, version: str, source: Path) -> None:
            staging = tmp_path / "staging" / model / version
            staging.mkdir(parents=True)
            shutil.copy(source, staging / "model.onnx")
            (repo / model).mkdir(exist_ok=True)
            staging.rename(repo / model / version)  # whole folder appears at once

        place("mlp", "2", model_files["mlp2"])
        wait_until(lambda: index(s.url).get(("mlp", "2"), {}).get("state") == "READY", what="mlp v2")
        assert infer_mlp(s.url).json()["model_version"] == "2"

        shutil.rmtree(repo / "mlp" / "1")
        wait_until(lambda: ("mlp", "1") not in index(s.url), what="mlp v1 to go")
        assert infer_mlp(s.url, version="1").status_code == 404

        place("ints", "1", model_files["ints"])
        wait_until(lambda: ("ints", "1") in index(s.url), what="new model ints")

        # A corrupt model makes only itself unavailable.
        (repo / "corrupt" / "1").mkdir(parents=True)
        (repo / "corrupt" / "1" / "model.onnx").write_bytes(b"\x00garbage")
        wait_until(lambda: ("corrupt", "1") in index(s.url), what="corrupt model listed")
        row = index(s.url)[("corrupt", "1")]
        assert row["state"] == "UNAVAILABLE" and "cannot load" in row["reason"]
        assert infer_mlp(s.url).status_code == 200
        assert infer_mlp(s.url, "corrupt").status_code == 503

        # A serving version whose file breaks keeps serving the previous load, and says why.
        (repo / "mlp" / "2" / "model.onnx").write_bytes(b"broken on purpose")
        wait_until(lambda: "reload failed" in index(s.url)[("mlp", "2")]["reason"], what="failed reload")
        assert index(s.url)[("mlp", "2")]["state"] == "READY"
        np.testing.assert_allclose(
            infer_mlp(s.url).json()["outputs"][0]["data"], mlp_reference(X, 2.0).ravel(), rtol=1e-5
        )

        shutil.rmtree(repo / "ints")
        wait_until(lambda: not any(k[0] == "ints" for k in index(s.url)), what="model ints to go")


def test_explicit_load_and_unload(make_repository: RepoFactory) -> None:
    repo = make_repository(mlp=[1], ints=[1])
    settings = {
        "repositories": (str(repo),),
        "model_control": "explicit",
        "load_models": ("mlp",),
        "grpc_port": 0,
    }
    with Server([], port=0, **settings) as s:
        http = th.InferenceServerClient(s.url.removeprefix("http://"))
        grpc = tg.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")
        assert http.is_model_ready("mlp")
        assert not http.is_model_ready("ints")
        assert index(s.url)[("ints", None)]["reason"] == "unloaded"

        http.load_model("ints")
        assert http.is_model_ready("ints") and grpc.is_model_ready("ints")
        http.unload_model("ints")
        assert not http.is_model_ready("ints")

        grpc.load_model("ints")
        assert grpc.is_model_ready("ints")
        grpc.unload_model("mlp")
        assert not grpc.is_model_ready("mlp") and not http.is_model_ready("mlp")
        assert infer_mlp(s.url).status_code == 404

        with pytest.raises(InferenceServerException, match="not in the model repository"):
            http.load_model("nope")
        with pytest.raises(InferenceServerException, match="not in the model repository"):
            grpc.load_model("nope")


def test_text_models_with_a_card_are_on_the_openai_routes_too(tiny_embed_model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_embed_model, repo / "embedder" / "1")
    with Server([], port=0, repositories=(str(repo),)) as s:
        r = httpx.post(s.url + "/v1/embeddings", json={"model": "embedder", "input": ["a quick brown fox"]})
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 1
        assert httpx.get(s.url + "/v2/models/embedder/ready").status_code == 200
        # ...and its graph over KServe v2, like every exported task
        meta = httpx.get(s.url + "/v2/models/embedder").json()
        assert meta["platform"] == "onnxruntime_onnx"
        assert {i["name"] for i in meta["inputs"]} >= {"input_ids", "attention_mask"}
        mask_only = {"inputs": [{"name": "attention_mask", "shape": [1, 2], "datatype": "INT64", "data": [1, 1]}]}
        kserve = httpx.post(s.url + "/v2/models/embedder/infer", json=mask_only)
        assert kserve.status_code == 400 and "input_ids" in kserve.json()["error"]


def test_external_data_beside_the_model_is_used(tmp_path: Path, model_files: dict[str, Path]) -> None:
    import onnx

    model = onnx.load(str(model_files["mlp"]))
    folder = tmp_path / "repo" / "ext" / "1"
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").stat().st_size > 0
    with Server([], port=0, repositories=(str(tmp_path / "repo"),)) as s:
        r = infer_mlp(s.url, "ext")
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], mlp_reference(X).ravel(), rtol=1e-5)
