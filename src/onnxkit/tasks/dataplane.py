"""The tensor data plane: every verb of KServe v2 and TF-Serving, transport-neutral.

KServe REST, KServe gRPC and TF-Serving REST are codecs around this: they turn their wire format
into these calls and types and back, and map ``OnnxkitError`` to their own status codes once.
None of them imports another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxkit import __version__
from onnxkit.errors import InvalidRequest, ModelNotFound
from onnxkit.tasks.control import Controller, IndexRow
from onnxkit.tasks.models import Models, State, version_order
from onnxkit.tasks.signature import Signature
from onnxkit.types import JSON, Array

SERVER_NAME = "onnxkit"
EXTENSIONS = ("binary_tensor_data", "classification", "model_repository", "model_configuration", "statistics")


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    classification: int = 0  # top-k labels instead of scores (Triton's classification extension); 0: off


@dataclass(frozen=True)
class InferRequest:
    model: str
    inputs: Mapping[str, Array]  # public input names
    version: str | None = None
    outputs: Sequence[RequestedOutput] = ()  # empty: every output
    id: Any = None


@dataclass(frozen=True)
class InferResponse:
    model: str
    version: str
    outputs: dict[str, Array]  # public names, in the order asked for
    id: Any = None


@dataclass(frozen=True)
class VersionStatus:
    version: str
    state: State
    reason: str = ""


def classification_count(value: Any, output: str) -> int:
    """The ``classification`` parameter of a requested output, as any codec received it."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise InvalidRequest(
            f"output {output!r}: parameter 'classification' is {value!r}; expected a positive integer "
            "(how many top classes to return)"
        )
    return int(value)


@dataclass
class DataPlane:
    models: Models
    controller: Controller | None = None
    started: bool = False
    extensions: tuple[str, ...] = field(default=EXTENSIONS)

    # -- server ------------------------------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        # Ready once start-up loading is done; a model that failed is reported per model, not here,
        # so one corrupt model never takes the others out of a load balancer.
        return self.started

    def server_metadata(self) -> JSON:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(self.extensions)}

    # -- models ------------------------------------------------------------------------------------------
    def model_ready(self, name: str, version: str | None = None) -> None:
        """Returns when ready; raises 404 (unknown) or 503 (with the reason) otherwise."""
        self.models.get(name, version)

    def model_metadata(self, name: str, version: str | None = None) -> JSON:
        """KServe v2 model metadata: name, ready versions, platform, inputs, outputs."""
        loaded = self.models.get(name, version).live()
        versions = [v.version for v in self.models.model(name).ready_versions()]
        if loaded.tensor is not None:
            meta = loaded.tensor.signature.metadata()
        else:  # a chat model: no tensor signature to show
            meta = {"platform": f"onnxkit_{loaded.task.value}", "inputs": [], "outputs": []}
        return {"name": name, "versions": versions, **meta}

    def signature(self, name: str, version: str | None = None) -> Signature:
        return self.models.tensor(name, version).signature

    def model_config(self, name: str, version: str | None = None) -> JSON:
        return self.models.tensor(name, version).triton_config()

    def version_status(self, name: str, version: str | None = None) -> list[VersionStatus]:
        """TF-Serving's GetModelStatus: one version or all of them, newest first."""
        model = self.models.model(name)
        if version is not None and version not in model.versions:
            have = ", ".join(sorted(model.versions, key=version_order)) or "none"
            raise ModelNotFound(f"model {name!r} has no version {version!r}; versions: {have}")
        picked = [model.versions[version]] if version is not None else list(model.versions.values())
        picked.sort(key=lambda v: version_order(v.version), reverse=True)
        return [VersionStatus(v.version, v.state, v.reason) for v in picked]

    async def infer(self, request: InferRequest) -> InferResponse:
        model = self.models.tensor(request.model, request.version)
        classes = {o.name: o.classification for o in request.outputs if o.classification}
        wanted = [o.name for o in request.outputs] or None
        outputs = await model.infer(request.inputs, wanted, classification=classes)
        return InferResponse(request.model, model.version, outputs, request.id)

    def statistics(self, name: str = "", version: str | None = None) -> list[JSON]:
        """Triton's ``model_stats``: every ready version of every model, of one model, or one version."""
        if not name:
            return [v.live().recorder.stats.report(m.name, v.version)
                    for m in self.models.models() for v in m.ready_versions()]  # fmt: skip
        if version:
            chosen = [self.models.get(name, version)]
        else:
            self.models.get(name)  # 404 when unknown, 503 (with the reasons) when no version is ready
            chosen = self.models.model(name).ready_versions()
        return [v.live().recorder.stats.report(name, v.version) for v in chosen]

    # -- repository extension ------------------------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[IndexRow]:
        if self.controller is not None:
            return self.controller.index(ready_only)
        return [
            IndexRow(m.name, v.state.value, v.reason, v.version)
            for m in self.models.models()
            for v in m.versions.values()
            if not ready_only or v.ready
        ]

    async def load(self, name: str) -> None:
        await self._controller().load(name)

    async def unload(self, name: str) -> None:
        await self._controller().unload(name)

    def _controller(self) -> Controller:
        if self.controller is None:
            raise InvalidRequest(
                "model control is off: start the server with --repository DIR --model-control explicit"
            )
        return self.controller


TF_STATES = {State.LOADING: "LOADING", State.READY: "AVAILABLE", State.UNLOADING: "UNLOADING", State.UNAVAILABLE: "END"}


def model_version_status(statuses: Sequence[VersionStatus]) -> JSON:
    """TF-Serving's ``{"model_version_status": [...]}``. OpenAI's ``GET /v1/models/{m}`` shares TF-Serving's
    status path, so its model object carries this too: both kinds of client read what they need."""
    return {
        "model_version_status": [
            {
                "version": s.version,
                "state": TF_STATES.get(s.state, "END"),
                "status": {
                    "error_code": "UNKNOWN" if s.state is State.UNAVAILABLE else "OK",
                    "error_message": s.reason if s.state is State.UNAVAILABLE else "",
                },
            }
            for s in statuses
        ]
    }
