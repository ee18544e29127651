"""Settings are read once at start-up into frozen objects and passed down.

Nothing else reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("ONNXKIT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "onnxkit"


DEFAULT_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    # embeddings batcher
    max_batch_size: int = 32
    max_batch_delay_ms: float = 5.0
    max_queue: int = 1024
    # chat engine
    max_concurrent_sequences: int = 8
    chat_gather_ms: float = 10.0  # an idle engine waits for the rest of a burst before it starts
    max_queued_generations: int = 256
    threads: int = 0  # 0: let onnxruntime decide
    log_json: bool = False
    access_log: bool = True
    # tensor serving: Triton-layout repositories, --config files, model control, gRPC (None: off)
    repositories: tuple[str, ...] = ()
    model_config_files: tuple[str, ...] = ()
    model_control: str = "none"  # none | poll | explicit
    repository_poll_seconds: float = 5.0
    load_models: tuple[str, ...] = ("*",)  # explicit mode: what to load at start
    grpc_port: int | None = None
    # the model a request without "model" gets, where several of a kind are served
    default_chat_model: str | None = None
    default_embeddings_model: str | None = None
