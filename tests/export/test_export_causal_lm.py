from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxkit.errors import InvalidRequest
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


@pytest.mark.integration
def test_smollm2_int4_from_gguf_answers(smollm_hf: Path, tmp_path: Path) -> None:
    out = build_genai(smollm_hf, tmp_path / "genai", "int4")
    config = json.loads((out / "genai_config.json").read_text())
    assert config["model"]["context_length"] == 8192  # the model's own context stays
    assert config["search"]["max_length"] == 2048  # but the per-batch KV cache is sized down
    assert (out / "model.onnx").is_file() and (out / "tokenizer.json").is_file()
    assert "Paris" in _greedy(out, "What is the capital of France?", 8)


def test_unknown_precision_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="int4 or fp32"):
        build_genai(tmp_path, tmp_path / "out", "int8")
