"""GGUF (possibly quantized) → float Hugging Face folder, for the genai builder and parity checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from onnxkit.errors import InvalidRequest, MissingDependency, SupplyError


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependency("transformers", "export") from exc
    try:
        import gguf  # noqa: F401  (transformers reads GGUF through it)
    except ImportError as exc:
        raise MissingDependency("gguf", "export") from exc
    return transformers


def gguf_to_hf(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantize ``gguf_file`` into ``out_dir`` as config + safetensors + tokenizer + generation config."""
    if not gguf_file.is_file():
        raise InvalidRequest(f"GGUF file {gguf_file} does not exist")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tf = _transformers()
    import torch

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        loaded = tf.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:
        raise SupplyError(
            f"transformers could not read GGUF {gguf_file}: {exc}; "
            "expected a GGUF of an architecture transformers supports (llama, mistral, qwen2, ...)"
        ) from exc
    # The loaded model is marked quantized and refuses save_pretrained; a fresh model
    # built from the same config (minus quantization_config) holds the dequantized weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    fresh = type(loaded)(config)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(fresh, "_tied_weights_keys", None) or [])
    really_missing = [k for k in missing if k not in tied and "lm_head" not in k]
    if really_missing or unexpected:
        raise SupplyError(
            f"GGUF {gguf_file}: weights did not map onto {type(fresh).__name__}: "
            f"missing {really_missing[:5]}, unexpected {list(unexpected)[:5]}"
        )
    if loaded.generation_config is not None:
        fresh.generation_config = loaded.generation_config
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = tf.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokenizer.save_pretrained(out_dir)
    del loaded, fresh
    return out_dir
