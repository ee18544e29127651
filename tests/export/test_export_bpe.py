"""Fused byte-level BPE tokenizers (GPT-2, RoBERTa, Llama 3 style): strings in, the same outputs as
the Hugging Face tokenizer + the model, on tiny RoBERTa models made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from transformers import AutoTokenizer

from onnxkit.errors import InvalidRequest
from onnxkit.export import export
from onnxkit.export.fuse import session_options
from onnxkit.export.samples import heldout_texts

SENTENCES = (Path(__file__).parent / "data" / "sentences.txt").read_text().splitlines()
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _tiny_roberta(folder: Path, style: str, normalizer: object = None) -> Path:
    """A 2-layer random RoBERTa whose byte-level BPE (trained on the test sentences) is styled
    like GPT-2's, RoBERTa's or Llama 3's tokenizer."""
    import torch
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    bpe = Tokenizer(models.BPE())
    if style == "llama3":
        bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif style == "other-regex":
        bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r"\w+|[^\w\s]+"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=style == "roberta-prefix-space")
    if normalizer is not None:
        bpe.normalizer = normalizer
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(SENTENCES, trainer)
    names = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    tokenizer: transformers.PreTrainedTokenizerBase
    if style == "gpt2":
        tokenizer = transformers.GPT2Tokenizer(tokenizer_object=bpe, **names)
    elif style in ("llama3", "other-regex"):
        # the generic class keeps tokenizer.json as it is; RobertaTokenizer and GPT2Tokenizer
        # rebuild their own normalizer and pre-tokenizer when they load
        bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
        tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, **names)
    else:
        bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
        tokenizer = transformers.RobertaTokenizer(
            tokenizer_object=bpe, sep_token="</s>", cls_token="<s>", mask_token="<mask>", **names
        )
    tokenizer.model_max_length = 48
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = transformers.RobertaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=50,  # RoBERTa positions start after the padding index
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    transformers.RobertaModel(config).save_pretrained(str(folder))
    return folder


def _plain(folder: Path, texts: list[str]) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()})[0])


def _fused(folder: Path, texts: list[str]) -> np.ndarray:
    sess = ort.InferenceSession(str(folder / "model.onnx"), session_options(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"text": np.array(texts, dtype=object)})[0])


@pytest.mark.parametrize("style", ["roberta", "gpt2", "llama3", "roberta-prefix-space"])
def test_byte_level_bpe_fuses_and_matches_tokenizer_plus_model(style: str, tmp_path: Path) -> None:
    source = _tiny_roberta(tmp_path / "src", style)
    plain = export(source, "pooling", tmp_path / "plain")
    fused = export(source, "pooling", tmp_path / "fused", fuse_tokenizer=True)
    card = json.loads((fused / "onnxkit.json").read_text())
    assert card["fused_tokenizer"] is True
    assert card["fusion"]["tokenizer_op"] == "GPT2Tokenizer"
    assert card["fusion"]["ids_identical_on_texts"] > 700  # the gate's own check on held-out texts
    # unseen words fall apart into bytes; odd spacing, accents, emoji; one text past max_length
    texts = [
        *SENTENCES[:40],
        *heldout_texts()[:120],
        "  two  spaces",
        "Ünïcödé naïve café 🙂",
        "",
        " ".join(SENTENCES[:12]),
    ]
    worst = 0.0
    for start in range(0, len(texts), 20):  # batches with real padding
        batch = texts[start : start + 20]
        want, got = _plain(plain, batch), _fused(fused, batch)
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-5


def test_tokenizer_ids_match_hugging_face_on_the_special_tokens(tmp_path: Path) -> None:
    # RoBERTa puts <s> ... </s> around a text and keeps </s> when it truncates; a <mask> in the text
    # is one token. The default task returns per-token states, so a wrong or missing id shows up.
    source = _tiny_roberta(tmp_path / "src", "roberta")
    plain = export(source, "default", tmp_path / "plain")
    fused = export(source, "default", tmp_path / "fused", fuse_tokenizer=True)
    texts = ["The <mask> sat on the mat.", " ".join(SENTENCES[:15]), "Hi."]
    np.testing.assert_allclose(_fused(fused, texts), _plain(plain, texts), atol=1e-5)


@pytest.mark.parametrize(
    ("style", "normalizer", "reason"),
    [
        ("llama3", "nfc", r"normalizer NFC has no equivalent"),
        ("other-regex", None, r"regex '\\\\w\+\|\[\^\\\\w\\\\s\]\+'.*only GPT-2's and Llama 3's"),
    ],
)
def test_inexpressible_bpe_is_refused_naming_class_and_reason(
    style: str, normalizer: str | None, reason: str, tmp_path: Path
) -> None:
    from tokenizers import normalizers

    source = _tiny_roberta(tmp_path / "src", style, normalizers.NFC() if normalizer else None)
    kind = type(AutoTokenizer.from_pretrained(str(source))).__name__  # the class transformers loads
    with pytest.raises(InvalidRequest, match=rf"tokenizer {kind} cannot be fused by onnx\S+: .*{reason}"):
        export(source, "pooling", tmp_path / "out", fuse_tokenizer=True)
    assert not (tmp_path / "out").exists()
