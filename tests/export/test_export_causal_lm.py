from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from onnxkit.errors import InvalidRequest
from onnxkit.export import export
from onnxkit.export.causal_lm import build_genai

og = pytest.importorskip("onnxruntime_genai")


def _greedy(folder: Path, prompt: str, new_tokens: int) -> str:
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=64, do_sample=False)
    generator = og.Generator(model, params)
    messages = json.dumps([{"role": "user", "content": prompt}])
    ids = tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    generator.append_tokens(ids)
    for _ in range(new_tokens):
        if generator.is_done():
            break
        generator.generate_next_token()
    return str(tokenizer.decode(generator.get_sequence(0)[len(ids) :]))


@pytest.mark.parametrize("quantize", [None, "int4"])
def test_tiny_llama_builds_and_matches_pytorch(
    tiny_llama_dir: Path, tmp_path: Path, quantize: str | None
) -> None:
    out = export(tiny_llama_dir, "causal-lm", tmp_path / "out", quantize=quantize, max_length=128)
    card = json.loads((out / "onnxkit.json").read_text())
    assert card["format"] == "genai" and card["precision"] == ("int4" if quantize else "fp32")
    config = json.loads((out / "genai_config.json").read_text())
    assert config["model"]["context_length"] == 256 and config["search"]["max_length"] == 128
    if quantize is None:
        assert card["parity"]["logits_min_cosine"] > 0.9999
        assert card["parity"]["next_token_agreement"] == 1.0
    ops = (out / "model.onnx").read_bytes()
    assert (b"MatMulNBits" in ops) == (quantize == "int4")

    # greedy decoding, token by token, agrees with transformers for the fp32 build
    if quantize is None:
        ids = np.array([5, 17, 33, 2], dtype=np.int32)
        model = og.Model(str(out))
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=12, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
        got = list(generator.get_sequence(0))
        reference = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
        with torch.no_grad():
            want = reference.generate(
                torch.from_numpy(ids.astype(np.int64))[None],
                max_length=12,
                do_sample=False,
                eos_token_id=None,
            )
        assert got == want[0].tolist()


@pytest.mark.integration
def test_smollm2_gguf_requantized_to_int4(smollm_gguf: Path, tmp_path: Path) -> None:
    """--requantize int4: the pre-exact path (dequantize, round-to-nearest int4), kept for users who want it.

    The exact path (the default) is tested on the catalog's build in tests/models/test_catalog.py."""
    out = export(smollm_gguf, "causal-lm", tmp_path / "genai", requantize="int4")
    config = json.loads((out / "genai_config.json").read_text())
    assert config["model"]["context_length"] == 8192  # the model's own context stays
    assert config["search"]["max_length"] == 2048  # but the per-batch KV cache is sized down
    card = json.loads((out / "onnxkit.json").read_text())
    assert card["source"] == str(smollm_gguf) and card["precision"] == "int4"
    assert card["parity"]["logits_min_cosine"] > 0.7
    assert sum(f.stat().st_size for f in out.iterdir()) < 120 * 1024**2
    assert "Paris" in _greedy(out, "What is the capital of France?", 8)


def test_unknown_precision_and_options_are_rejected(tiny_llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="int4 or fp32"):
        build_genai(tmp_path, tmp_path / "out", "int8")
    with pytest.raises(InvalidRequest, match="not int8"):
        export(tiny_llama_dir, "causal-lm", tmp_path / "a", quantize="int8")
    with pytest.raises(InvalidRequest, match="drop --optimize"):
        export(tiny_llama_dir, "causal-lm", tmp_path / "b", fuse_tokenizer=True)


def test_gguf_source_needs_causal_lm(smollm_gguf: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="only works with --task causal-lm"):
        export(smollm_gguf, "pooling", tmp_path / "x")
