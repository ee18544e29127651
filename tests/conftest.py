"""Session-wide fixtures: tiny models generated in the test session, and the real default models."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what the test modules' imports made (~700k objects: torch, transformers, onnx...).

    Python's full collections walk every tracked object; this process's ran ~0.5 s each, holding the
    GIL, and stalled the in-process servers the tests time. Frozen, they walk only what came later:
    the server's own ``settle_heap``, applied to the test process.
    """
    from onnxkit.runtime.memory import settle_heap

    settle_heap()

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The capital of France is Paris.",
    "A quick brown fox jumps over the lazy dog.",
    "Quantum computers use qubits to represent information.",
    "Large language models predict the next token in a sequence.",
    "The weather today is sunny with a light breeze.",
    "Onnxruntime runs neural networks on many kinds of hardware.",
] * 4


def _byte_bpe(special: list[str], vocab_size: int = 400):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with a byte-level BPE tokenizer, built by the genai builder (fp32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from onnxkit.export.causal_lm import build_genai

    root = tmp_path_factory.mktemp("tiny-chat")
    hf = root / "hf"
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _byte_bpe(special)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(hf)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16384,
        bos_token_id=tok.token_to_id("<|im_start|>"),
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(hf)
    out = build_genai(hf, root / "tiny-chat", precision="fp32", max_length=16384)
    return out


@pytest.fixture(scope="session")
def tiny_embed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT with a WordPiece tokenizer, exported with mean pooling."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from onnxkit.export.pooling import export_pooling

    root = tmp_path_factory.mktemp("tiny-embed")
    hf = root / "hf"
    words = sorted({w.strip(".,").lower() for s in CORPUS for w in s.split()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    ).save_pretrained(hf)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(hf)
    out = root / "tiny-embed"
    export_pooling(hf, out)
    card = json.loads((out / "onnxkit.json").read_text())
    assert card["task"] == "pooling"
    return out


@pytest.fixture(scope="session")
def default_model() -> Callable[[str], Path]:
    """Finds a real default model in the cache (`make test` pulls them first)."""
    from onnxkit.models.cache import Cache
    from onnxkit.settings import default_home

    def find(name: str) -> Path:
        found = Cache(default_home()).get(name)
        if found is None:
            pytest.fail(f"default model {name!r} is not in the cache; run `onnxkit pull {name}` (make test does)")
        return found.path

    return find


WORDS = [
    "the", "capital", "of", "france", "is", "paris", "a", "quick", "brown", "fox", "jumps", "over", "lazy",
    "dog", "what", "where", "who", "this", "example", "about", "sports", "politics", "weather", "today",
    "sunny", "with", "light", "breeze",
]  # fmt: skip
SENTIMENT = {0: "negative", 1: "neutral", 2: "positive"}
NLI = {0: "contradiction", 1: "neutral", 2: "entailment"}


def _task_hf_folder(root: Path, head: str, id2label: dict[int, str] | None) -> Path:
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    hf = root / "hf"
    vocab = {t: i for i, t in enumerate(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    transformers.PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    ).save_pretrained(hf)
    torch.manual_seed(0)
    labels: dict[str, Any] = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, **labels,
    )
    getattr(transformers, head)(config).save_pretrained(hf)
    return hf


@pytest.fixture(scope="session")
def task_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random BERT exports: text-classification (tiny-cls), zero-shot (tiny-nli), QA (tiny-qa)."""
    from onnxkit.export import export

    out = {}
    for name, task, head, labels in (
        ("tiny-cls", "text-classification", "BertForSequenceClassification", SENTIMENT),
        ("tiny-nli", "zero-shot-classification", "BertForSequenceClassification", NLI),
        ("tiny-qa", "question-answering", "BertForQuestionAnswering", None),
    ):
        root = tmp_path_factory.mktemp(name)
        out[name] = export(_task_hf_folder(root, head, labels), task, root / "out")
    return out


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with one logit, exported as text-classification: a cross-encoder's shape."""
    from onnxkit.export import export

    root = tmp_path_factory.mktemp("tiny-cross")
    return export(_task_hf_folder(root, "BertForSequenceClassification", {0: "relevance"}), "text-classification",
                  root / "out")  # fmt: skip
