"""What every transport reads: built once by ``create_app`` and held by the app."""

from __future__ import annotations

from dataclasses import dataclass

from onnxkit.runtime.metrics import Metrics
from onnxkit.settings import ServerSettings
from onnxkit.tasks.dataplane import DataPlane
from onnxkit.tasks.models import Models


@dataclass
class AppState:
    settings: ServerSettings
    models: Models
    plane: DataPlane
    metrics: Metrics
    grpc_port: int | None = None  # where gRPC listens, once started

    @property
    def started(self) -> bool:
        return self.plane.started
