"""Settings are read once at start-up into frozen objects and passed down.

Nothing else reads the environment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("ONNXKIT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "onnxkit"


DEFAULT_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; every bound is checked before the work starts (``--limit NAME=N``).

    A request over a bound is answered 413 (or 400) naming the bound and how to raise it.
    """

    max_inputs: int = 2048  # texts per /v1/embeddings or /v1/classify request, questions per /v1/qa
    max_request_tokens: int = 131072  # tokens one embeddings / classify / QA request may hold in all
    max_generations: int = 64  # prompts x n of one completion or chat request
    max_pairs: int = 4096  # texts x candidate labels of one zero-shot request
    max_stop: int = 16  # stop strings per request
    max_stop_chars: int = 256  # characters per stop string
    max_tensor_elements: int = 16 * 1024 * 1024  # elements per tensor of a KServe / TF-Serving request
    max_dims: int = 16  # dims per tensor

    @staticmethod
    def names() -> list[str]:
        return [f.name for f in fields(Limits)]

    def with_values(self, pairs: list[str]) -> Limits:
        """``["max_inputs=4096", ...]`` applied; a wrong name or value says which and what is allowed."""
        changes: dict[str, int] = {}
        for pair in pairs:
            name, _, value = pair.partition("=")
            name = name.strip().replace("-", "_")
            if name not in self.names():
                raise ValueError(f"--limit {pair!r}: no limit {name!r}; limits: {', '.join(self.names())}")
            if not value.strip().isdigit() or int(value) < 1:
                raise ValueError(f"--limit {pair!r}: expected {name}=N with N a positive integer")
            changes[name] = int(value)
        return replace(self, **changes)


# The slowest a client may send a request body or take a response, once --request-timeout's first
# seconds are spent (Apache's mod_reqtimeout default): slower, and it could hold a connection forever.
MIN_TRANSFER_RATE = 500  # bytes per second


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_body_bytes: int = 8 * 1024 * 1024
    # a request's headers must arrive within this; its body too, plus 1 s per MIN_TRANSFER_RATE bytes
    request_timeout_s: float = 20.0
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
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        # Checked here, for the CLI and onnxkit.Server alike: 0 would make every deadline sweep spin.
        timeout = self.request_timeout_s
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"--request-timeout (request_timeout_s) {timeout!r}: expected a number of seconds above 0")
