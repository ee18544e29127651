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


# Prompts for the logits check; short so that the torch reference stays cheap.
CHECK_PROMPTS = (
    "The capital of France is",
    "Here is a list of three fruits: apple, banana,",
    "def add(a, b):\n    return",
)
# fp32 must match PyTorch (SmolLM2: max |diff| 3e-5). Round-to-nearest int4 moves small models'
# logits a lot (SmolLM2-135M: cosine 0.81-0.93 to fp32, next token agreeing on 2 of 3 prompts,
# lm_head kept in fp32 barely helps), so for int4 the gate only catches a broken build (~0).
MIN_COSINE = {"fp32": 0.9999, "int4": 0.7}


def check_genai(hf_dir: Path, genai_dir: Path, precision: str) -> dict[str, float]:
    """Compare next-token logits of the genai model with PyTorch on a few prompts; raise on drift."""
    import numpy as np
    import onnxruntime_genai as og
    import torch
    import transformers

    from onnxkit.export.verify import ParityError

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    reference: Any = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    reference.eval()
    model = og.Model(str(genai_dir))
    cosines, agree, diffs = [], [], []
    for prompt in CHECK_PROMPTS:
        ids = tokenizer(prompt, return_tensors="np")["input_ids"][0].astype(np.int32)
        with torch.no_grad():
            want = reference(torch.from_numpy(ids.astype(np.int64))[None]).logits[0, -1].numpy()
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + 2, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        got = np.asarray(generator.get_logits(), dtype=np.float64).reshape(-1)[: want.shape[0]]
        del generator
        cosines.append(float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-12)))
        agree.append(float(np.argmax(got) == np.argmax(want)))
        diffs.append(float(np.abs(got - want).max()))
    figures = {
        "logits_min_cosine": min(cosines),
        "next_token_agreement": float(np.mean(agree)),
        "logits_max_abs_diff": max(diffs),
    }
    if figures["logits_min_cosine"] < MIN_COSINE[precision]:
        raise ParityError(
            f"onnxruntime-genai {precision} model drifts from PyTorch: next-token logits cosine "
            f"{figures['logits_min_cosine']:.4f} (needs ≥ {MIN_COSINE[precision]}); nothing was written"
        )
    _say("genai vs PyTorch: " + ", ".join(f"{k}={v:.4g}" for k, v in figures.items()))
    return figures
