"""Causal language models → onnxruntime-genai folders, built by onnxruntime-genai's own builder.

Hugging Face folders build in fp32 or int4 (the builder's round-to-nearest MatMulNBits). A GGUF
file keeps its own quantized blocks (``build_from_gguf``): the builder lays out the graph in fp32
from the dequantized weights and ``gguf_graph`` puts the GGUF's blocks back in; ``--requantize
int4`` instead dequantizes and lets the builder quantize again, which moves the model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxkit.errors import InvalidRequest, MissingDependency, SupplyError

if TYPE_CHECKING:
    from onnxkit.export.gguf_compute import Plan

PRECISIONS = ("int4", "fp32")
REQUANTIZE = ("int4",)
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


# Prompts for the logits check; short so that the torch reference stays cheap. Plain text and
# chat turns (the way the served model is prompted); none of them is a test prompt.
CHECK_PROMPTS = (
    "The capital of France is",
    "Here is a list of three fruits: apple, banana,",
    "def add(a, b):\n    return",
)
CHECK_CHATS = (
    "Give me two tips for sleeping better.",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue? Answer in one sentence.",
)
# fp32 must match PyTorch (SmolLM2: max |diff| 3e-5); so must a GGUF's own blocks against its
# dequantized weights (the exact path: only activations' rounding differs). Round-to-nearest int4
# (HF folders with --quantize int4, GGUF with --requantize int4) moves small models' logits a lot
# (SmolLM2-135M: cosine 0.81-0.93, next token agreeing on 2 of 3 prompts, lm_head kept in fp32
# barely helps), so for int4 the gate only catches a broken build (~0).
MIN_COSINE = {"fp32": 0.9999, "gguf": 0.999, "int4": 0.7}


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
    prompts = [(p, True) for p in CHECK_PROMPTS]
    if tokenizer.chat_template:  # the template writes its own special tokens
        for chat in CHECK_CHATS:
            turn = [{"role": "user", "content": chat}]
            text = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
            prompts.append((str(text), False))
    for prompt, special in prompts:
        ids = tokenizer(prompt, return_tensors="np", add_special_tokens=special)["input_ids"][0].astype(np.int32)
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
        "prompts": len(prompts),
    }
    if figures["logits_min_cosine"] < MIN_COSINE[precision]:
        raise ParityError(
            f"onnxruntime-genai {precision} model drifts from PyTorch: next-token logits cosine "
            f"{figures['logits_min_cosine']:.4f} (needs ≥ {MIN_COSINE[precision]}); nothing was written"
        )
    _say("genai vs PyTorch: " + ", ".join(f"{k}={v:.4g}" for k, v in figures.items()))
    return figures


def build_from_gguf(
    gguf_file: Path,
    out_dir: Path,
    scratch: Path,
    *,
    max_length: int | None = DEFAULT_MAX_LENGTH,
    plan: Plan | None = None,
) -> dict[str, Any]:
    """GGUF → onnxruntime-genai folder in ``out_dir`` computing with the GGUF's own blocks.

    ``scratch`` holds the dequantized Hugging Face folder (the builder's input and the parity
    reference). ``plan``: MatMulNBits' accuracy level and block length per weight group (None:
    ``gguf_compute.DEFAULT_PLAN``, float32 activations everywhere; level 4 quantizes them to int8
    as llama.cpp does: faster, and the gate decides whether the result may be written). Returns
    the card fields.
    Raises ParityError, leaving ``out_dir`` to the caller to discard, below the gate.
    """
    from onnxkit.export.gguf import GGUFFile, gguf_to_hf
    from onnxkit.export.gguf_graph import carry_blocks

    gguf = GGUFFile(gguf_file)
    gguf.require_exact_support()  # before minutes of work, not after
    _say(f"dequantizing {gguf_file.name} for the builder and the parity reference")
    hf_dir = gguf_to_hf(gguf_file, scratch / "hf")
    build_genai(hf_dir, out_dir, "fp32", max_length)
    _say("carrying the GGUF's blocks into the graph")
    graph = carry_blocks(out_dir, gguf, plan)
    parity = check_genai(hf_dir, out_dir, "gguf")
    tensors = {name: t.type_name for name, t in sorted(gguf.tensors.items())}
    return {
        "precision": "gguf",
        "gguf": {"architecture": gguf.architecture, "types": gguf.type_counts(), "tensors": tensors, "graph": graph},
        "parity": {"reference": "pytorch (dequantized GGUF, float32)", **parity},
    }


def export_causal_lm(
    source: Path,
    kind: str,
    label: str,
    scratch: Path,
    staging: Path,
    *,
    quantize: str | None = None,
    requantize: str | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """``onnxkit export ... --task causal-lm`` into ``staging``; returns the model card.

    ``kind`` is the resolved source's: "gguf" (a file) or "hf-folder".
    """
    from onnxkit.export.card import graph_io

    if kind == "gguf":
        if quantize is not None:
            raise InvalidRequest(
                f"--quantize {quantize} does not apply to a GGUF source: its own quantized blocks are kept "
                "exactly; drop --quantize, or pass --requantize int4 to dequantize and re-quantize it"
            )
        if requantize is not None and requantize not in REQUANTIZE:
            raise InvalidRequest(f"--requantize {requantize!r} is not supported; expected int4")
    elif requantize is not None:
        raise InvalidRequest(
            f"--requantize applies to GGUF sources only; {label} is a Hugging Face folder: use --quantize int4"
        )
    length = max_length or DEFAULT_MAX_LENGTH
    card: dict[str, Any] = {"task": "causal-lm", "source": label, "format": "genai"}
    if kind == "gguf" and requantize is None:
        card.update(build_from_gguf(source, staging, scratch, max_length=length))
    else:
        hf_dir = source
        if kind == "gguf":
            from onnxkit.export.gguf import gguf_to_hf

            _say(f"dequantizing {source.name} to a float Hugging Face folder (--requantize {requantize})")
            hf_dir = gguf_to_hf(source, scratch / "hf")
        precision = "fp32" if quantize is None and requantize is None else "int4"
        build_genai(hf_dir, staging, precision, length)
        card["precision"] = precision
        card["parity"] = {"reference": "pytorch", **check_genai(hf_dir, staging, precision)}
    genai = json.loads((staging / "genai_config.json").read_text())
    card["max_length"] = genai["search"]["max_length"]
    card["context_length"] = genai["model"].get("context_length")
    card["inputs"], card["outputs"] = graph_io(staging / "model.onnx")
    return card
