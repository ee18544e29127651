"""gRPC ModelConfig through tritonclient.grpc (its own compiled copy of Triton's protos) against the REST /config."""

from __future__ import annotations

from typing import Any

import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tensor_fixtures import RepoFactory, Served
from tritonclient.grpc import model_config_pb2 as triton_config
from tritonclient.grpc import service_pb2 as triton_service
from tritonclient.utils import InferenceServerException

from onnxkit.serve._proto import grpc_service_pb2 as pb
from onnxkit.serve.server import Server


@pytest.fixture(scope="module")
def grpc_client(served: Served) -> tg.InferenceServerClient:
    return tg.InferenceServerClient(served.grpc_address)


@pytest.fixture(scope="module")
def http_client(served: Served) -> th.InferenceServerClient:
    return th.InferenceServerClient(served.http_address)


def _signature(field: FieldDescriptor) -> tuple[Any, ...]:
    return (
        field.name,
        field.type,
        field.is_repeated,
        field.message_type.full_name if field.message_type else None,
        field.enum_type.full_name if field.enum_type else None,
        field.containing_oneof.name if field.containing_oneof else None,
    )


def _mismatches(ours: Descriptor) -> list[str]:
    theirs = triton_service.DESCRIPTOR.pool.FindMessageTypeByName(ours.full_name)
    found = []
    for field in ours.fields:
        twin = theirs.fields_by_number.get(field.number)
        if twin is None or _signature(field) != _signature(twin):
            found.append(f"{ours.full_name}.{field.name} = {field.number}")
    for nested in ours.nested_types:
        found += _mismatches(nested)
    return found


def test_every_message_and_method_matches_tritons_wire_format() -> None:
    """Each of our fields is Triton's field of that number (name, type, label, oneof); enums and methods agree."""
    bad = [m for message in pb.DESCRIPTOR.message_types_by_name.values() for m in _mismatches(message)]
    assert bad == []
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        theirs = triton_service.DESCRIPTOR.pool.FindEnumTypeByName(enum.full_name)
        assert [(v.name, v.number) for v in enum.values] == [(v.name, v.number) for v in theirs.values]
    ours_service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs_service = triton_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in ours_service.methods:
        twin = theirs_service.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            twin.input_type.full_name,
            twin.output_type.full_name,
        )
    assert {"ModelConfig", "ModelStatistics"} <= set(ours_service.methods_by_name)


def _tensors(config: triton_config.ModelConfig, kind: str) -> list[tuple[str, str, list[int]]]:
    return [(t.name, triton_config.DataType.Name(t.data_type), list(t.dims)) for t in getattr(config, kind)]


def _same_config(http: dict[str, Any], grpc_config: triton_config.ModelConfig, as_json: dict[str, Any]) -> None:
    assert grpc_config.name == http["name"]
    assert grpc_config.platform == http["platform"]
    assert grpc_config.backend == http["backend"]
    assert grpc_config.max_batch_size == http["max_batch_size"]
    for kind in ("input", "output"):
        assert _tensors(grpc_config, kind) == [(t["name"], t["data_type"], t["dims"]) for t in http[kind]]
    policy = json_format.ParseDict(http["version_policy"], triton_config.ModelVersionPolicy())
    assert grpc_config.version_policy == policy
    if "dynamic_batching" in http:
        assert grpc_config.WhichOneof("scheduling_choice") == "dynamic_batching"
        assert (
            grpc_config.dynamic_batching.max_queue_delay_microseconds
            == http["dynamic_batching"]["max_queue_delay_microseconds"]
        )
    else:
        assert grpc_config.WhichOneof("scheduling_choice") is None
    # The whole message: the REST JSON read as Triton's ModelConfig is what came over gRPC.
    assert grpc_config == json_format.ParseDict(http, triton_config.ModelConfig())
    # as_json is MessageToJson (int64 as strings, zero values left out): the same fields, read back.
    config = as_json["config"]
    assert config["name"] == http["name"]
    assert config.get("max_batch_size", 0) == http["max_batch_size"]
    for kind in ("input", "output"):
        got = [(t["name"], t["data_type"], [int(d) for d in t.get("dims", [])]) for t in config[kind]]
        assert got == [(t["name"], t["data_type"], t["dims"]) for t in http[kind]]


@pytest.mark.parametrize(
    ("model", "version"), [("mlp", ""), ("mlp", "1"), ("ints", ""), ("strings", ""), ("half", "1")]
)
def test_grpc_config_is_the_http_config(
    grpc_client: tg.InferenceServerClient, http_client: th.InferenceServerClient, model: str, version: str
) -> None:
    http = http_client.get_model_config(model, version)
    response = grpc_client.get_model_config(model, version)
    assert isinstance(response, triton_service.ModelConfigResponse)
    _same_config(http, response.config, grpc_client.get_model_config(model, version, as_json=True))


def test_grpc_config_values(grpc_client: tg.InferenceServerClient) -> None:
    mlp = grpc_client.get_model_config("mlp").config
    assert (mlp.name, mlp.platform, mlp.backend, mlp.max_batch_size) == ("mlp", "onnxruntime_onnx", "onnxruntime", 8)
    assert _tensors(mlp, "input") == [("x", "TYPE_FP32", [4])]
    assert _tensors(mlp, "output") == [("logits", "TYPE_FP32", [3])]
    assert mlp.version_policy.WhichOneof("policy_choice") == "all"
    assert mlp.WhichOneof("scheduling_choice") == "dynamic_batching"
    ints = grpc_client.get_model_config("ints").config
    assert ints.max_batch_size == 4  # Triton's auto-complete default for a dynamic batch dim
    assert _tensors(ints, "output") == [("doubled", "TYPE_INT64", [-1]), ("total", "TYPE_INT64", [])]
    assert ints.version_policy.latest.num_versions == 1
    assert _tensors(grpc_client.get_model_config("strings").config, "input") == [("text", "TYPE_STRING", [])]
    assert _tensors(grpc_client.get_model_config("half").config, "input") == [("a", "TYPE_FP16", [2])]


def test_unbatched_specific_policy_and_queue_delay(make_repository: RepoFactory) -> None:
    repo = make_repository(
        ints_flat=[1, 2],
        mlp_wait=[1],
        configs={
            "ints_flat": "max_batch_size: 0\nversion_policy: {specific: {versions: [1]}}\n",
            "mlp_wait": "max_batch_size: 8\ndynamic_batching: {max_queue_delay_microseconds: 1500}\n",
        },
    )
    with Server([], port=0, repositories=(str(repo),), grpc_port=0) as s:
        grpc_client = tg.InferenceServerClient(f"127.0.0.1:{s.grpc_port}")
        http_client = th.InferenceServerClient(s.url.removeprefix("http://"))
        for model in ("ints_flat", "mlp_wait"):
            _same_config(
                http_client.get_model_config(model),
                grpc_client.get_model_config(model).config,
                grpc_client.get_model_config(model, as_json=True),
            )
        flat = grpc_client.get_model_config("ints_flat").config
        assert flat.max_batch_size == 0
        assert _tensors(flat, "input") == [("ids", "TYPE_INT64", [-1, -1])]  # the batch dim stays
        assert list(flat.version_policy.specific.versions) == [1]
        assert flat.WhichOneof("scheduling_choice") is None
        wait = grpc_client.get_model_config("mlp_wait", as_json=True)["config"]
        assert wait["dynamic_batching"] == {"max_queue_delay_microseconds": "1500"}  # uint64 in JSON


def test_config_errors_map_to_status_codes(grpc_client: tg.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        grpc_client.get_model_config("nope")
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert "'nope'" in unknown.value.message()
    with pytest.raises(InferenceServerException) as no_version:
        grpc_client.get_model_config("mlp", "9")
    assert no_version.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as broken:
        grpc_client.get_model_config("broken")
    assert broken.value.status() == "StatusCode.UNAVAILABLE"
