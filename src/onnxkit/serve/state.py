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
    named: tuple[str, ...] = ()  # the models named at start-up (repository ones aside)

    @property
    def started(self) -> bool:
        return self.plane.started

    def health(self) -> tuple[str, dict[str, str]]:
        """"ok" once every model named at start-up is ready, else "loading" or "unavailable", with the
        reason of each that failed. Repository models report their own state (KServe's ready routes)."""
        failed: dict[str, str] = {}
        ready = self.started
        for name in self.named:
            model = self.models.find(name)
            if model is not None and model.ready:
                continue
            ready = False
            if self.started:
                reasons = [v.reason for v in model.versions.values() if v.reason] if model is not None else []
                failed[name] = "; ".join(reasons) or "not ready"
        return ("ok" if ready else "unavailable" if failed else "loading"), failed
