"""Tiny random Llama models written as GGUF files, quantized per tensor to the types under test.

The ``gguf`` package quantizes Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 itself; the K-quants (Q4_K, Q5_K,
Q6_K) it only reads, so their blocks are written here with numpy from ggml's block definitions
(plain min/max scaling, not llama.cpp's search: any valid block serves an exactness test).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

# ggml type ids (GGMLQuantizationType)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 3, 6, 7, 8, 10, 12, 13, 14, 30
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 256, 512, 2, 4, 2  # K-quant rows need multiples of 256
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.astype(np.float16)).view(np.uint8).reshape(*x.shape, 2)


def _superblocks(values: np.ndarray, sub: int) -> np.ndarray:
    """[rows, cols] → [rows, cols / 256, 256 / sub, sub]."""
    rows, cols = values.shape
    return values.reshape(rows, cols // 256, 256 // sub, sub).astype(np.float32)


def _scaled(values: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: value ≈ d·sc·q − dmin·m with 6-bit sc, m per 32 and q < levels."""
    x = _superblocks(values, 32)
    low = np.minimum(x.min(axis=-1), 0.0)
    scale = (x.max(axis=-1) - low) / (levels - 1)
    d = np.maximum(scale.max(axis=-1), 1e-8) / 63
    dmin = np.maximum((-low).max(axis=-1), 1e-8) / 63
    d, dmin = d.astype(np.float16).astype(np.float32), dmin.astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(scale / d[..., None]), 1, 63).astype(np.uint8)
    m = np.clip(np.round(-low / dmin[..., None]), 0, 63).astype(np.uint8)
    step = (d[..., None] * sc)[..., None]
    q = np.clip(np.round((x + (dmin[..., None] * m)[..., None]) / step), 0, levels - 1).astype(np.uint8)
    return d, dmin, sc, m, q


def _k_scale_bytes(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The inverse of ggml's get_scale_min_k4: eight 6-bit scales and mins → 12 bytes."""
    return np.concatenate(
        [
            (sc[..., :4] & 63) | ((sc[..., 4:] >> 4) << 6),
            (m[..., :4] & 63) | ((m[..., 4:] >> 4) << 6),
            (sc[..., 4:] & 0x0F) | ((m[..., 4:] & 0x0F) << 4),
        ],
        axis=-1,
    ).astype(np.uint8)


def _k_nibbles(q: np.ndarray) -> np.ndarray:
    """[..., 8, 32] codes → 128 bytes: chunk c holds sub-block 2c (low nibbles) and 2c + 1 (high)."""
    low = q[..., 0::2, :] & 0x0F
    high = q[..., 1::2, :] & 0x0F
    return (low | (high << 4)).reshape(*q.shape[:-2], 128).astype(np.uint8)


def q4_k(values: np.ndarray) -> np.ndarray:
    d, dmin, sc, m, q = _scaled(values, 16)
    parts = [_f16_bytes(d), _f16_bytes(dmin), _k_scale_bytes(sc, m), _k_nibbles(q)]
    return np.concatenate(parts, axis=-1).reshape(values.shape[0], -1)


def q5_k(values: np.ndarray) -> np.ndarray:
    d, dmin, sc, m, q = _scaled(values, 32)
    qh = ((q >> 4) << np.arange(8, dtype=np.uint8)[:, None]).sum(axis=-2).astype(np.uint8)  # bit s: sub-block s
    parts = [_f16_bytes(d), _f16_bytes(dmin), _k_scale_bytes(sc, m), qh, _k_nibbles(q)]
    return np.concatenate(parts, axis=-1).reshape(values.shape[0], -1)


def q6_k(values: np.ndarray) -> np.ndarray:
    x = _superblocks(values, 16)
    scale = np.abs(x).max(axis=-1) / 31
    d = (np.maximum(np.abs(scale).max(axis=-1), 1e-8) / 127).astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(scale / d[..., None]), 1, 127).astype(np.int8)
    step = (d[..., None] * sc)[..., None]
    q = (np.clip(np.round(x / step), -32, 31) + 32).astype(np.uint8).reshape(*x.shape[:2], 2, 4, 32)
    ql = np.concatenate([(q[..., 0, :] & 0x0F) | ((q[..., 2, :] & 0x0F) << 4),
                         (q[..., 1, :] & 0x0F) | ((q[..., 3, :] & 0x0F) << 4)], axis=-1)
    qh = (q[..., 0, :] >> 4) | ((q[..., 1, :] >> 4) << 2) | ((q[..., 2, :] >> 4) << 4) | ((q[..., 3, :] >> 4) << 6)
    parts = [ql.reshape(*x.shape[:2], 128), qh.reshape(*x.shape[:2], 64), sc.view(np.uint8), _f16_bytes(d)]
    return np.concatenate(parts, axis=-1).reshape(values.shape[0], -1)


def encode(values: np.ndarray, ggml_type: int) -> np.ndarray:
    """float32 [rows, cols] → the GGUF tensor (bytes [rows, bytes per row] for quantized types)."""
    from gguf import GGMLQuantizationType, quants

    if ggml_type == F32:
        return values.astype(np.float32)
    if ggml_type in (Q4_K, Q5_K, Q6_K):
        return {Q4_K: q4_k, Q5_K: q5_k, Q6_K: q6_k}[ggml_type](values)
    if ggml_type == Q2_K:  # no encoder: bytes of the right size, for the refusal test only
        return np.random.default_rng(0).integers(0, 256, (values.shape[0], values.shape[1] // 256 * 84), np.uint8)
    out: np.ndarray = quants.quantize(values.astype(np.float32), GGMLQuantizationType(ggml_type))
    return out


def _tokenizer() -> tuple[list[str], list[str], list[int]]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from onnxkit.export.samples import SENTENCES

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(SENTENCES, trainer)
    vocab = bpe.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    model = bpe.model
    merges = [" ".join(pair) for pair in model.get_merges()] if hasattr(model, "get_merges") else []
    if not merges:
        import json

        merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    types = [3 if t in special else 1 for t in tokens]  # 3: control, 1: normal
    return tokens, merges, types


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf Q/K row order (interleaved rotary halves)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama(
    path: Path, types: Callable[[str], int], *, tied: bool = True, architecture: str = "llama", seed: int = 0
) -> Path:
    """A 2-layer random Llama as GGUF; ``types(gguf_name)`` picks each weight matrix's ggml type."""
    import gguf
    import torch
    import transformers

    tokens, merges, token_types = _tokenizer()
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokens), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied,
    )
    state = {k: v.detach().numpy() for k, v in transformers.LlamaForCausalLM(config).state_dict().items()}
    # A random model's norms are all ones; vary them so that a misplaced norm would show.
    rng = np.random.default_rng(seed)
    for name in state:
        if name.endswith("norm.weight"):
            state[name] = (1 + 0.1 * rng.standard_normal(state[name].shape)).astype(np.float32)
    names = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output"}
    layer = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-llama")
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(token_types)
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_chat_template(CHAT_TEMPLATE)
    for hf_name, values in state.items():
        key = hf_name.removeprefix("model.").removesuffix(".weight")
        if key.startswith("layers."):
            _, idx, rest = key.split(".", 2)
            name = f"blk.{idx}.{layer[rest]}.weight"
        elif key in names:
            name = f"{names[key]}.weight"
        else:
            raise AssertionError(f"unmapped weight {hf_name}")
        if name == "output.weight" and tied:
            continue
        if ".attn_q." in name:
            values = _permute(values, HEADS)
        elif ".attn_k." in name:
            values = _permute(values, KV_HEADS)
        ggml_type = F32 if values.ndim == 1 else types(name)
        data = encode(values, ggml_type)
        raw_dtype = None if ggml_type in (F32, F16) else gguf.GGMLQuantizationType(ggml_type)
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Every quantized type onnxkit carries over, by name.
QUANTIZED = {"Q4_0": Q4_0, "Q4_1": Q4_1, "Q5_0": Q5_0, "Q5_1": Q5_1, "Q8_0": Q8_0, "Q4_K": Q4_K, "Q5_K": Q5_K,
             "Q6_K": Q6_K}


def realistic_weights(rows: int, cols: int, seed: int) -> np.ndarray:
    """Random rows as real weight rows are: an offset per row and a few outliers."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)) * 0.05 + rng.standard_normal((rows, 1)) * 0.02
    w[rng.integers(0, rows, 4), rng.integers(0, cols, 4)] *= 20
    return w.astype(np.float32)
