"""GGUF sources: exact block carry-over into onnxruntime-genai, refusals, and the dequantized reference."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import transformers
from tiny_gguf import BF16, F16, LAYERS, Q2_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, write_tiny_llama

from onnxkit.cli import main
from onnxkit.errors import InvalidRequest
from onnxkit.export import export
from onnxkit.export.causal_lm import build_from_gguf
from onnxkit.export.gguf import gguf_to_hf
from onnxkit.export.gguf_compute import EXACT, KERNEL, Compute, Plan

og = pytest.importorskip("onnxruntime_genai")


def _uniform(t: int, embed: int | None = None, output: int | None = None, **by_role: int) -> Callable[[str], int]:
    """Every matrix of type ``t``, except the token embedding, output and roles (attn_v=...) named."""

    def pick(name: str) -> int:
        if name == "token_embd.weight" and embed is not None:
            return embed
        if name == "output.weight" and output is not None:
            return output
        role = name.split(".")[2] if name.startswith("blk.") else ""
        return by_role.get(role, t)

    return pick


# One tiny model per block type, each also covering a way blocks are laid out in the graph:
# tied or not, embedding as GatherBlockQuantized or a float table, packed Q/K/V of mixed types.
MODELS: dict[str, tuple[Callable[[str], int], bool]] = {
    "Q4_0": (_uniform(Q4_0), True),  # tied: lm_head and GatherBlockQuantized share the 4-bit bytes
    "Q4_1": (_uniform(Q4_1, embed=Q8_0), True),  # SmolLM2's layout
    "Q5_0": (_uniform(Q5_0), False),
    "Q5_1": (_uniform(Q5_1, output=F16), False),  # float lm_head; min per block → float embedding table
    "Q8_0": (_uniform(Q8_0), True),
    "Q4_K": (_uniform(Q4_K, output=Q6_K, attn_v=Q6_K, ffn_down=Q6_K), False),  # Q4_K_M's mix
    "Q5_K": (_uniform(Q5_K, attn_v=BF16), True),  # a float V inside the packed Q/K/V
    "Q6_K": (_uniform(Q6_K), True),
}
PROMPT = "The river ran quietly past the old mill"


def _logits_and_greedy(folder: Path, ids: list[int], new: int) -> tuple[np.ndarray, list[int]]:
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + new, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(ids, dtype=np.int32))
    logits = np.asarray(generator.get_logits(), dtype=np.float64).reshape(-1)
    while not generator.is_done():
        generator.generate_next_token()
    return logits, [int(t) for t in generator.get_sequence(0)[len(ids) :]]


@pytest.mark.parametrize("plan", [KERNEL, EXACT], ids=["BlockMatMul", "MatMulNBits"])
@pytest.mark.parametrize("name", list(MODELS))
def test_each_block_type_is_carried_over_exactly(name: str, plan: Plan, tmp_path: Path) -> None:
    types, tied = MODELS[name]
    gguf_file = write_tiny_llama(tmp_path / f"tiny-{name}.gguf", types, tied=tied)
    out = tmp_path / "genai"
    fields = build_from_gguf(gguf_file, out, tmp_path / "scratch", max_length=128, plan=plan)
    assert fields["gguf"]["types"][name] > 0
    assert fields["parity"]["logits_min_cosine"] >= 0.9999

    # Independently of the gate: logits and a greedy continuation against the dequantized float model.
    hf = tmp_path / "scratch" / "hf"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf))
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    ids = tokenizer(PROMPT)["input_ids"]
    got, greedy = _logits_and_greedy(out, ids, 8)
    with torch.no_grad():
        want = reference(torch.tensor([ids])).logits[0, -1].double().numpy()
        sequence = reference.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want))) >= 0.9999
    assert greedy == sequence[0, len(ids) :].tolist()

    # The quantized matrices are BlockMatMul or MatMulNBits now; no float copy of them is left behind.
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    if plan is KERNEL:
        assert ops.count("BlockMatMul") >= 2 * 4 and "MatMulNBits" not in ops
        # the folder carries the library, and genai loads it from there
        config = json.loads((out / "genai_config.json").read_text())
        assert config["model"]["decoder"]["session_options"]["custom_ops_library"] == "libonnxkit_kernels.so"
        assert (out / "libonnxkit_kernels.so").is_file()
    else:
        assert ops.count("MatMulNBits") >= 2 * 4 and "BlockMatMul" not in ops
    float_matmuls = {n.input[1] for n in graph.node if n.op_type == "MatMul" and "offset" not in n.name}
    if name == "Q5_1":
        assert float_matmuls == {"/lm_head.MatMul.weight"}  # the F16 output matrix stays float
    if name == "Q5_K":
        assert len(float_matmuls) == 2 and ops.count("Concat") >= 2  # BF16 attn_v of each layer
    # gate and up read one activation: one MatMulNBits and a Split per layer, where both are blocks.
    assert ops.count("Split") == LAYERS
    assert fields["gguf"]["graph"]["nodes"]["MatMuls fused with a sibling"] == 2 * LAYERS
    # Types with a min per block have no GatherBlockQuantized form: their table is dequantized to float.
    embedding = {n.op_type for n in graph.node if n.name.startswith("/model/embed_tokens/Gather")}
    assert embedding == {"Gather" if name in ("Q5_1", "Q4_K", "Q5_K") else "GatherBlockQuantized"}


def test_cli_default_keeps_the_blocks_and_records_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    types, tied = MODELS["Q4_K"]
    gguf_file = write_tiny_llama(tmp_path / "tiny.gguf", types, tied=tied)
    out = tmp_path / "out"
    assert main(["export", str(gguf_file), "--task", "causal-lm", "-o", str(out), "--max-length", "128", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["precision"] == "gguf" and card["format"] == "genai"
    assert card["gguf"]["types"] == {"F32": 5, "Q4_K": 11, "Q6_K": 5}
    assert card["gguf"]["tensors"]["blk.1.attn_v.weight"] == "Q6_K"
    graph = card["gguf"]["graph"]
    kernel = {"op": "onnxkit.BlockMatMul", "activations": "float32", "block": "gguf"}  # a C compiler is at hand
    assert graph["compute"] == {"layers": kernel, "lm_head": kernel}
    assert graph["nodes"]["BlockMatMul Q6_K"] == 5  # output, and attn_v and ffn_down of both layers
    assert card["parity"]["logits_min_cosine"] >= 0.999 and card["parity"]["prompts"] == 6
    assert card == json.loads((out / "onnxkit.json").read_text())


def test_a_plan_sets_each_weight_groups_compute_and_the_card_records_it(tmp_path: Path) -> None:
    types, tied = MODELS["Q4_1"]
    gguf_file = write_tiny_llama(tmp_path / "tiny.gguf", types, tied=tied)
    # Both groups keep float32 activations (levels 0 and 1 are both float32 on CPU), so that the
    # gate holds on random weights; what is checked is that each group gets its own settings.
    plan = Plan(layers=Compute(0, 16), lm_head=Compute(1))
    fields = build_from_gguf(gguf_file, tmp_path / "out", tmp_path / "scratch", max_length=128, plan=plan)
    assert fields["gguf"]["graph"]["compute"] == {
        "layers": {"op": "MatMulNBits", "accuracy_level": 0, "block": 16},
        "lm_head": {"op": "MatMulNBits", "accuracy_level": 1, "block": "gguf"},
    }
    graph = onnx.load(str(tmp_path / "out" / "model.onnx"), load_external_data=False).graph
    settings = set()
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            settings.add((node.name.startswith("/lm_head/"), attrs["accuracy_level"], attrs["block_size"]))
    assert settings == {(False, 0, 16), (True, 1, 32)}


def test_unsupported_type_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gguf_file = write_tiny_llama(tmp_path / "q2k.gguf", _uniform(Q4_0, ffn_down=Q2_K))
    with pytest.raises(InvalidRequest, match=r"'blk\.0\.ffn_down\.weight' has type Q2_K.*supported types: .*Q6_K"):
        export(gguf_file, "causal-lm", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["export", str(gguf_file), "--task", "causal-lm", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "has type Q2_K" in err and "--requantize int4" in err


def test_other_architectures_are_named(tmp_path: Path) -> None:
    gguf_file = write_tiny_llama(tmp_path / "qwen.gguf", _uniform(Q8_0), architecture="qwen2")
    with pytest.raises(InvalidRequest, match=r"holds a 'qwen2' model.*Llama family.*--requantize int4"):
        export(gguf_file, "causal-lm", tmp_path / "out")


def test_quantize_and_requantize_are_checked(tmp_path: Path, tiny_llama_dir: Path) -> None:
    gguf_file = write_tiny_llama(tmp_path / "q8.gguf", _uniform(Q8_0))
    with pytest.raises(InvalidRequest, match="does not apply to a GGUF source: its own quantized blocks are kept"):
        export(gguf_file, "causal-lm", tmp_path / "a", quantize="int4")
    with pytest.raises(InvalidRequest, match="--requantize 'int8' is not supported"):
        export(gguf_file, "causal-lm", tmp_path / "b", requantize="int8")
    with pytest.raises(InvalidRequest, match="GGUF sources only"):
        export(tiny_llama_dir, "causal-lm", tmp_path / "c", requantize="int4")
    with pytest.raises(InvalidRequest, match="--requantize is for GGUF sources"):
        export(tiny_llama_dir, "pooling", tmp_path / "d", requantize="int4")


@pytest.mark.integration
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
    with pytest.raises(InvalidRequest, match="does not exist"):
        build_from_gguf(tmp_path / "nope.gguf", tmp_path / "out", tmp_path / "scratch")
