from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from onnxkit.errors import InvalidRequest
from onnxkit.export.gguf import gguf_to_hf

pytestmark = pytest.mark.integration


def test_quantized_gguf_becomes_a_float_hf_folder(smollm_hf: Path) -> None:
    config = json.loads((smollm_hf / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert (smollm_hf / "model.safetensors").is_file()
    assert (smollm_hf / "tokenizer.json").is_file()
    assert (smollm_hf / "generation_config.json").is_file()

    model = transformers.AutoModelForCausalLM.from_pretrained(str(smollm_hf)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(smollm_hf))
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


def test_missing_gguf_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        gguf_to_hf(tmp_path / "nope.gguf", tmp_path / "out")
