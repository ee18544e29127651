"""GGUF files: their tensors and blocks as stored (``GGUFFile``), and the float Hugging Face folder
(``gguf_to_hf``) that serves as the genai builder's input and the parity gate's reference."""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import InvalidRequest, MissingDependency, SupplyError
from onnxkit.export import gguf_blocks
from onnxkit.types import Array

# general.architecture values whose graph the exact path lays out: llama.cpp writes Llama 1-3,
# Mistral 7B, SmolLM, TinyLlama and other Llama-shaped models under "llama".
LLAMA_FAMILY = ("llama",)


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    type: int  # ggml type id
    rows: int
    cols: int  # the contiguous axis (ggml's ne0): K of a weight matrix
    raw: Array  # the stored bytes (memory-mapped)

    @property
    def type_name(self) -> str:
        return gguf_blocks.type_name(self.type)

    @property
    def quantized(self) -> bool:
        return self.type not in gguf_blocks.FLOAT_TYPES

    def blocks(self) -> gguf_blocks.Blocks:
        return gguf_blocks.decode(self.name, self.type, self.raw, self.rows, self.cols)

    def values(self) -> Array:
        """float32 [rows, cols]: the dequantized blocks, or the float tensor itself."""
        if self.quantized:
            return self.blocks().dequantize()
        return gguf_blocks.decode_float(self.name, self.type, self.raw, self.rows, self.cols)


class GGUFFile:
    """A GGUF file read with the ``gguf`` package: metadata and tensors, nothing converted."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise InvalidRequest(f"GGUF file {path} does not exist")
        try:
            from gguf import GGUFReader
        except ImportError as exc:
            raise MissingDependency("gguf", "export") from exc
        try:
            reader = GGUFReader(str(path))
        except Exception as exc:
            raise InvalidRequest(f"{path} is not a readable GGUF file: {exc}") from exc
        self.path = path
        self._fields = reader.fields
        self.tensors: dict[str, GGUFTensor] = {}
        for t in reader.tensors:
            dims = [int(d) for d in t.shape]
            rows = int(np.prod(dims[1:])) if len(dims) > 1 else 1
            self.tensors[t.name] = GGUFTensor(t.name, int(t.tensor_type), rows, dims[0], t.data)

    def field(self, key: str) -> Any:
        found = self._fields.get(key)
        return None if found is None else found.contents()

    @property
    def architecture(self) -> str:
        return str(self.field("general.architecture") or "unknown")

    def type_counts(self) -> dict[str, int]:
        return dict(collections.Counter(t.type_name for t in self.tensors.values()))

    def require_exact_support(self) -> None:
        """Refuse, before any conversion work, a GGUF the exact path cannot carry over."""
        arch = self.architecture
        if arch not in LLAMA_FAMILY:
            raise InvalidRequest(
                f"GGUF {self.path.name} holds a {arch!r} model; carrying quantized blocks over exactly "
                f"is supported for the Llama family (general.architecture {', '.join(LLAMA_FAMILY)}: Llama, "
                "Mistral, SmolLM, TinyLlama). For this file try --requantize int4 (dequantize, then "
                "onnxruntime-genai's round-to-nearest int4), which takes what transformers can read"
            )
        for tensor in self.tensors.values():
            if tensor.type not in gguf_blocks.TYPE_NAMES:
                raise gguf_blocks.unsupported(tensor.name, tensor.type)


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
