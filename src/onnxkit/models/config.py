"""Per-model serving config: ``DIR/<model>/config.yaml`` and the ``--config`` single-file form.

Keys follow Triton's model configuration where one exists (``max_batch_size``,
``dynamic_batching``, ``version_policy``, ``input``/``output``), written as YAML
or JSON instead of protobuf text. Unknown keys are an error: a typo that is
silently ignored costs more than one that stops the load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from onnxkit.errors import SupplyError
from onnxkit.types import DATATYPES

CONFIG_NAMES = ("config.yaml", "config.yml", "config.json")
PLATFORMS = {"onnxruntime", "onnxruntime_onnx", "onnx"}
_KEYS = {
    "name",
    "task",
    "platform",
    "backend",
    "model_platform",
    "base_path",
    "max_batch_size",
    "dynamic_batching",
    "version_policy",
    "model_version_policy",
    "threads",
    "intra_op_thread_count",
    "execution_providers",
    "input",
    "inputs",
    "output",
    "outputs",
    "labels",
    "label_filename",
}


@dataclass(frozen=True)
class TensorOverride:
    """How clients see one graph tensor: its public name and, optionally, its dims."""

    name: str  # the name clients use
    source: str  # the name in the ONNX graph
    dims: tuple[int, ...] | None = None  # without the batch dim when max_batch_size > 0
    datatype: str | None = None  # KServe datatype the config promises (checked at load)


@dataclass(frozen=True)
class VersionPolicy:
    kind: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[str, ...] = ()

    def select(self, available: Sequence[str]) -> list[str]:
        ordered = sorted(available, key=int)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :] if self.num_versions > 0 else []

    def describe(self) -> dict[str, Any]:
        if self.kind == "all":
            return {"all": {}}
        if self.kind == "specific":
            return {"specific": {"versions": [int(v) for v in self.versions]}}
        return {"latest": {"num_versions": self.num_versions}}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    task: str = ""  # "" : decided by the files (see tasks.loader)
    platform: str = "onnxruntime_onnx"
    max_batch_size: int | None = None  # None: decided from the graph at load (Triton's auto-complete)
    dynamic_batching: bool | None = None  # None: on when the model batches
    max_queue_delay_ms: float = 0.0
    max_queue_size: int | None = None
    pad_variable_dims: bool = False
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    threads: int = 0
    execution_providers: tuple[str, ...] = ()
    inputs: tuple[TensorOverride, ...] = ()
    outputs: tuple[TensorOverride, ...] = ()
    labels: tuple[str, ...] = ()
    base_path: Path | None = None  # --config form only



def _where(where: str, key: str) -> str:
    return f"{where}: {key!r}"


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).lstrip("-").isdigit():
        raise SupplyError(f"{what} is {value!r}; expected an integer")
    return int(value)


def _datatype(value: Any, what: str) -> str:
    text = str(value).upper().removeprefix("TYPE_")
    text = {"STRING": "BYTES", "FLOAT": "FP32", "FLOAT32": "FP32", "DOUBLE": "FP64"}.get(text, text)
    if text not in DATATYPES:
        raise SupplyError(f"{what} is {value!r}; expected one of {', '.join(DATATYPES)}")
    return text


def _overrides(items: Any, what: str) -> tuple[TensorOverride, ...]:
    if items is None:
        return ()
    if isinstance(items, Mapping):  # {graph_name: {name:..., dims:...}} shorthand
        items = [{"source": k, **(v or {})} for k, v in items.items()]
    if not isinstance(items, list):
        raise SupplyError(f"{what} is {items!r}; expected a list of {{name, dims, data_type}} entries")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not (item.get("name") or item.get("source")):
            raise SupplyError(f"{what}[{i}] is {item!r}; expected a mapping with 'name'")
        unknown = set(item) - {"name", "source", "dims", "shape", "data_type", "datatype", "label_filename"}
        if unknown:
            raise SupplyError(
                f"{what}[{i}] has unknown keys {sorted(unknown)}; known: name, source, dims, data_type"
            )
        name = str(item.get("name") or item["source"])
        dims_raw = item.get("dims", item.get("shape"))
        dims = None if dims_raw is None else tuple(_int(d, f"{what}[{i}].dims") for d in dims_raw)
        dt = item.get("data_type", item.get("datatype"))
        out.append(
            TensorOverride(
                name=name,
                source=str(item.get("source") or name),
                dims=dims,
                datatype=None if dt is None else _datatype(dt, f"{what}[{i}].data_type"),
            )
        )
    return tuple(out)


def _policy(value: Any, what: str) -> VersionPolicy:
    if value is None:
        return VersionPolicy()
    if value == "all":
        return VersionPolicy("all")
    if value == "latest":
        return VersionPolicy("latest", 1)
    if isinstance(value, Mapping) and len(value) == 1:
        kind, arg = next(iter(value.items()))
        if kind == "all":
            return VersionPolicy("all")
        if kind == "latest":
            n = arg.get("num_versions", 1) if isinstance(arg, Mapping) else (1 if arg is None else arg)
            return VersionPolicy("latest", _int(n, f"{what}.latest"))
        if kind == "specific":
            vs = arg.get("versions", []) if isinstance(arg, Mapping) else arg
            if not isinstance(vs, list):
                vs = [vs]
            return VersionPolicy("specific", versions=tuple(str(_int(v, f"{what}.specific")) for v in vs))
    raise SupplyError(
        f"{what} is {value!r}; expected 'all', {{latest: {{num_versions: N}}}} "
        "or {specific: {versions: [..]}}"
    )


def _labels(data: Mapping[str, Any], folder: Path | None, what: str) -> tuple[str, ...]:
    value = data.get("labels", data.get("label_filename"))
    for out in data.get("output") or data.get("outputs") or []:
        if isinstance(out, Mapping) and out.get("label_filename") and value is None:
            value = out["label_filename"]
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    path = Path(str(value))
    if not path.is_absolute() and folder is not None:
        path = folder / path
    if not path.is_file():
        raise SupplyError(f"{what}: label file {path} does not exist")
    return tuple(line.rstrip("\n") for line in path.read_text().splitlines())


def parse_model_config(
    data: Mapping[str, Any], *, name: str, where: str, folder: Path | None = None
) -> ModelConfig:
    """A validated ModelConfig from a parsed YAML/JSON mapping; any value of the wrong type is a SupplyError
    naming the file, so a bad config makes its model UNAVAILABLE instead of stopping the server."""
    try:
        return _parse(data, name=name, where=where, folder=folder)
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise SupplyError(f"{where}: a value has the wrong type or form ({exc})") from exc


BATCHING_KEYS = {"max_queue_delay_microseconds", "max_queue_delay_ms", "max_queue_size", "pad_variable_dims"}


def _parse(data: Mapping[str, Any], *, name: str, where: str, folder: Path | None) -> ModelConfig:
    unknown = set(data) - _KEYS
    if unknown:
        raise SupplyError(f"{where}: unknown keys {sorted(unknown)}; known keys: {', '.join(sorted(_KEYS))}")
    platform = str(
        data.get("platform") or data.get("model_platform") or data.get("backend") or "onnxruntime_onnx"
    )
    if platform not in PLATFORMS:
        raise SupplyError(
            f"{_where(where, 'platform')} is {platform!r}; onnxkit serves {', '.join(sorted(PLATFORMS))}"
        )
    batching = data.get("dynamic_batching")
    delay_ms = 0.0
    queue_size: int | None = None
    pad = False
    enabled: bool | None = None
    if isinstance(batching, Mapping):
        enabled = True
        extra = set(batching) - BATCHING_KEYS
        if extra:
            raise SupplyError(
                f"{where}: dynamic_batching has unknown keys {sorted(extra)}; known: {', '.join(sorted(BATCHING_KEYS))}"
            )
        if "max_queue_delay_microseconds" in batching:
            delay_ms = (
                _int(batching["max_queue_delay_microseconds"], f"{where}: max_queue_delay_microseconds")
                / 1000
            )
        if "max_queue_delay_ms" in batching:
            delay_ms = float(batching["max_queue_delay_ms"])
        if "max_queue_size" in batching:
            queue_size = _int(batching["max_queue_size"], f"{where}: dynamic_batching.max_queue_size")
        pad = batching.get("pad_variable_dims", False)
        if not isinstance(pad, bool):
            raise SupplyError(f"{where}: dynamic_batching.pad_variable_dims is {pad!r}; expected true or false")
    elif isinstance(batching, bool):
        enabled = batching
    elif batching is not None:
        raise SupplyError(f"{where}: dynamic_batching is {batching!r}; expected a mapping, true or false")
    mbs = data.get("max_batch_size")
    providers = data.get("execution_providers") or ()
    if isinstance(providers, str):
        providers = (providers,)
    return ModelConfig(
        name=str(data.get("name") or name),
        task=str(data.get("task") or ""),
        platform="onnxruntime_onnx",
        max_batch_size=None if mbs is None else _int(mbs, _where(where, "max_batch_size")),
        dynamic_batching=enabled,
        max_queue_delay_ms=delay_ms,
        max_queue_size=queue_size,
        pad_variable_dims=pad,
        version_policy=_policy(
            data.get("version_policy", data.get("model_version_policy")), f"{where}: version_policy"
        ),
        threads=_int(data.get("threads", data.get("intra_op_thread_count", 0)), _where(where, "threads")),
        execution_providers=tuple(str(p) for p in providers),
        inputs=_overrides(data.get("input", data.get("inputs")), f"{where}: input"),
        outputs=_overrides(data.get("output", data.get("outputs")), f"{where}: output"),
        labels=_labels(data, folder, where),
        base_path=Path(str(data["base_path"])).expanduser() if data.get("base_path") else None,
    )


def _parse_text(path: Path) -> Any:
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SupplyError(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from exc


def read_model_config(folder: Path, name: str) -> ModelConfig:
    """The config in a repository model folder, or the defaults when it has none."""
    for candidate in CONFIG_NAMES:
        path = folder / candidate
        if path.is_file():
            data = _parse_text(path) or {}
            if not isinstance(data, Mapping):
                raise SupplyError(f"{path} holds {type(data).__name__}; expected a mapping of config keys")
            return parse_model_config(data, name=name, where=str(path), folder=folder)
    return ModelConfig(name=name)


def read_config_file(path: Path) -> list[ModelConfig]:
    """``--config FILE``: {"model_config_list": [{"name", "base_path", "model_platform", ...}]}."""
    data = _parse_text(path)
    items = data.get("model_config_list") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise SupplyError(
            f"{path} has no 'model_config_list' list; expected {{\"model_config_list\": [...]}}"
        )
    out = []
    for i, item in enumerate(items):
        where = f"{path}: model_config_list[{i}]"
        if not isinstance(item, Mapping) or not item.get("name") or not item.get("base_path"):
            raise SupplyError(f"{where} is {item!r}; each entry needs 'name' and 'base_path'")
        base = Path(str(item["base_path"])).expanduser()
        if not base.is_absolute():
            base = (path.parent / base).resolve()
        cfg = parse_model_config(item, name=str(item["name"]), where=where, folder=base)
        out.append(replace(cfg, base_path=base))
    return out
