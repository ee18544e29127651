"""What every transport reads: the store and the settings, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnxkit.runtime.store import ModelStore
from onnxkit.settings import ServerSettings


@dataclass
class AppState:
    settings: ServerSettings
    store: ModelStore
    started: bool = False
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. metrics registry, grpc server
