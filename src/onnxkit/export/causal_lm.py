"""Causal language models → onnxruntime-genai folders, built by onnxruntime-genai's own builder."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from onnxkit.errors import InvalidRequest, MissingDependency, SupplyError

PRECISIONS = ("int4", "fp32")
# The KV cache is allocated at search.max_length for every batch (past_present_share_buffer),
# so the default of the model's full context (8192 for SmolLM2) costs ~0.8 s per batch on CPU.
DEFAULT_MAX_LENGTH = 2048


def _say(message: str) -> None:
    print(f"[onnxkit export] {message}", file=sys.stderr, flush=True)


def _run_builder(hf_dir: Path, out_dir: Path, precision: str, log: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="onnxkit-genai-cache-") as cache:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder"]
        cmd += ["-i", str(hf_dir), "-o", str(out_dir), "-p", precision, "-e", "cpu", "-c", cache]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        started = time.monotonic()
        with log.open("w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cache)
            while proc.poll() is None:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    _say(f"  builder still running ({time.monotonic() - started:.0f} s)")
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-8:]
            raise SupplyError(
                f"onnxruntime-genai builder failed on {hf_dir} (exit {proc.returncode}):\n"
                + "\n".join(tail)
            )


def size_search(genai_config: Path, max_length: int | None) -> dict[str, Any]:
    """Cap search.max_length (the per-batch KV-cache size); model.context_length stays the model's."""
    config: dict[str, Any] = json.loads(genai_config.read_text())
    context = int(config["model"].get("context_length", 0)) or None
    if max_length is not None:
        wanted = min(max_length, context) if context else max_length
        config["search"]["max_length"] = wanted
        genai_config.write_text(json.dumps(config, indent=4) + "\n")
    return config


def build_genai(
    hf_dir: Path, out_dir: Path, precision: str = "int4", max_length: int | None = DEFAULT_MAX_LENGTH
) -> Path:
    """Build an onnxruntime-genai model folder from a float Hugging Face causal-LM folder."""
    if precision not in PRECISIONS:
        raise InvalidRequest(f"causal-lm precision {precision!r} is not supported; expected int4 or fp32")
    if importlib.util.find_spec("onnxruntime_genai") is None:
        raise MissingDependency("onnxruntime-genai", "genai")
    if not (hf_dir / "config.json").is_file():
        raise InvalidRequest(f"causal-lm source {hf_dir} has no config.json; expected a Hugging Face folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    _say(f"building onnxruntime-genai model ({precision}, cpu) from {hf_dir}")
    with tempfile.TemporaryDirectory(prefix="onnxkit-genai-log-") as tmp:
        _run_builder(hf_dir, out_dir, precision, Path(tmp) / "builder.log")
    genai_config = out_dir / "genai_config.json"
    if not genai_config.is_file() or not (out_dir / "model.onnx").is_file():
        raise SupplyError(f"onnxruntime-genai builder left no genai_config.json/model.onnx in {out_dir}")
    size_search(genai_config, max_length)
    _say(f"built {out_dir}")
    return out_dir
