"""GGUF block formats decoded into what onnxruntime's MatMulNBits holds, without changing a value.

Every supported quantized row decodes to integer codes ``q`` with one scale per block along the
row and, for the types with a min, one additive offset per block:

    value = scale · (q − zero_point) + offset

which is ggml's own dequantization (ggml-quants.c) written per block. MatMulNBits computes
``A · ((q − zero_point) · scale)ᵀ`` with 4 or 8 bits per code, so the codes, scales and zero
points move across exactly; the offset, when there is one, is added by the graph as
``(A summed per block) · offsetᵀ`` (see ``gguf_graph``).

Types and their exact MatMulNBits form:

=========  ===========================================  ====  =====  =========  ======
type       ggml definition (per block)                   bits  block  zero pt.   offset
=========  ===========================================  ====  =====  =========  ======
Q4_0       d·(q − 8), q 4-bit, 32 a block                 4     32     8          –
Q4_1       d·q + m                                        4     32     0          m
Q5_0       d·(q − 16), q 5-bit                            8     32     16         –
Q5_1       d·q + m, q 5-bit                               8     32     0          m
Q8_0       d·q, q signed 8-bit (stored as q + 128)        8     32     128        –
Q4_K       d·sc·q − dmin·mn, 6-bit sc/mn per 32           4     32     0          −dmin·mn
Q5_K       as Q4_K with 5-bit q                           8     32     0          −dmin·mn
Q6_K       d·sc·(q − 32), q 6-bit, int8 sc per 16         8     16     32         –
=========  ===========================================  ====  =====  =========  ======

The scales ``d·sc`` are products of an fp16 and an integer of at most 8 bits, so float32 holds
them exactly. F32, F16 and BF16 tensors stay float.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxkit.errors import InvalidRequest
from onnxkit.types import Array

# ggml type ids (ggml.h); the gguf package has the same numbers in GGMLQuantizationType.
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q4_K, Q5_K, Q6_K, BF16 = 12, 13, 14, 30
TYPE_NAMES = {
    F32: "F32", F16: "F16", BF16: "BF16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1",
    Q8_0: "Q8_0", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K",
}
FLOAT_TYPES = (F32, F16, BF16)
# (elements per block, bytes per block) of the quantized types, as ggml lays them out.
BLOCK_BYTES = {
    Q4_0: (32, 18), Q4_1: (32, 20), Q5_0: (32, 22), Q5_1: (32, 24), Q8_0: (32, 34),
    Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210),
}
SUPPORTED = ", ".join(TYPE_NAMES.values())
# (bits, block, zero point) of each quantized type's MatMulNBits form, and the types with a min.
LAYOUT = {
    Q4_0: (4, 32, 8), Q4_1: (4, 32, 0), Q5_0: (8, 32, 16), Q5_1: (8, 32, 0), Q8_0: (8, 32, 128),
    Q4_K: (4, 32, 0), Q5_K: (8, 32, 0), Q6_K: (8, 16, 32),
}
WITH_MIN = (Q4_1, Q5_1, Q4_K, Q5_K)


@dataclass(frozen=True)
class Blocks:
    """A quantized [rows, cols] matrix: value = scale·(q − zero_point) + offset, per block of a row."""

    type: int  # the ggml type it came from
    bits: int  # 4 or 8: MatMulNBits' code width
    block: int  # elements sharing one scale (16 or 32)
    q: Array  # uint8 [rows, cols], every code < 2**bits
    scale: Array  # float32 [rows, cols // block]
    zero_point: int  # one for all blocks
    offset: Array | None  # float32 [rows, cols // 32] added to every element of a 32-block; None: none

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.q.shape[0]), int(self.q.shape[1])

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]

    def take_rows(self, order: Array) -> Blocks:
        """The same blocks with rows reordered (rows are independent: blocks run along a row)."""
        offset = None if self.offset is None else self.offset[order]
        return Blocks(self.type, self.bits, self.block, self.q[order], self.scale[order], self.zero_point, offset)

    def nibbles(self) -> tuple[Blocks, Blocks]:
        """8-bit codes as two exact 4-bit halves: scale·(q − z) = 16·scale·(hi − z_hi) + scale·(lo − z_lo).

        Every zero point here is a multiple of 16 (0, 16, 32, 128), so z_lo = 0. onnxruntime's CPU has
        a float32 kernel for 4-bit MatMulNBits only; the halves keep activations in float32 without
        dequantizing an 8-bit matrix on every call. The offset, if any, travels with ``lo``.
        """
        if self.bits != 8 or self.zero_point % 16:
            raise ValueError(f"{self.type_name}: only 8-bit blocks with a zero point divisible by 16 split")
        hi = Blocks(self.type, 4, self.block, self.q >> 4, self.scale * 16, self.zero_point >> 4, None)
        lo = Blocks(self.type, 4, self.block, self.q & 0x0F, self.scale, 0, self.offset)
        return hi, lo

    def split(self, block: int) -> Blocks:
        """The same values in blocks of ``block`` (a divisor of this block): each scale repeats.

        The weights do not change; at accuracy_level 4 MatMulNBits quantizes activations per weight
        block, so shorter blocks give each int8 activation scale fewer, more alike values.
        """
        if block == self.block:
            return self
        if block < 16 or self.block % block:
            raise ValueError(f"{self.type_name}: blocks of {self.block} cannot split into blocks of {block}")
        scale = np.repeat(self.scale, self.block // block, axis=1)
        return Blocks(self.type, self.bits, block, self.q, scale, self.zero_point, self.offset)

    def recentred(self) -> Blocks:
        """4-bit blocks with a min per 32-block moved to MatMulNBits' default zero point, 8.

        scale·(q − z) + offset = scale·(q − 8) + (offset + (8 − z)·scale): the same values, with the
        new offset rounded once to float32 (both terms are fp16-derived, so it is exact unless their
        exponents lie more than 13 apart). MatMulNBits then takes no zero-point input, and its
        CPU kernel without one is faster. Other blocks come back unchanged.
        """
        default = 1 << (self.bits - 1)
        if self.bits != 4 or self.offset is None or self.block != 32 or self.zero_point == default:
            return self
        offset = (self.offset + np.float32(default - self.zero_point) * self.scale).astype(np.float32)
        return Blocks(self.type, self.bits, self.block, self.q, self.scale, default, offset)

    def dequantize(self) -> Array:
        """float32 [rows, cols], computed as ggml computes it."""
        rows, cols = self.shape
        codes = self.q.reshape(rows, cols // self.block, self.block).astype(np.float32) - self.zero_point
        values = (codes * self.scale[..., None]).reshape(rows, cols)
        if self.offset is not None:
            values = (values.reshape(rows, -1, 32) + self.offset[..., None]).reshape(rows, cols)
        return values.astype(np.float32)


def type_name(ggml_type: int) -> str:
    if ggml_type in TYPE_NAMES:
        return TYPE_NAMES[ggml_type]
    try:  # the gguf package knows every ggml type's name (IQ2_XS, Q2_K, ...)
        from gguf import GGMLQuantizationType

        return str(GGMLQuantizationType(ggml_type).name)
    except (ImportError, ValueError):
        return f"ggml type {ggml_type}"


def _f16(raw: Array) -> Array:
    """Little-endian fp16 bytes [..., 2] → float32 [...]."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _nibbles(qs: Array) -> Array:
    """ggml's 4-bit packing: byte j holds element j (low nibble) and element j + n/2 (high)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits(qh: Array, count: int) -> Array:
    """Bit i of the little-endian uint32 ``qh`` [..., 4] → [..., count] of 0/1 (Q5_0, Q5_1)."""
    word = np.ascontiguousarray(qh).view("<u4")[..., 0]
    return ((word[..., None] >> np.arange(count, dtype=np.uint32)) & 1).astype(np.uint8)


def _q4_0(b: Array) -> Blocks:
    return Blocks(Q4_0, 4, 32, _nibbles(b[..., 2:18]), _f16(b[..., 0:2]), 8, None)


def _q4_1(b: Array) -> Blocks:
    return Blocks(Q4_1, 4, 32, _nibbles(b[..., 4:20]), _f16(b[..., 0:2]), 0, _f16(b[..., 2:4]))


def _q5_0(b: Array) -> Blocks:
    q = _nibbles(b[..., 6:22]) | (_high_bits(b[..., 2:6], 32) << 4)
    return Blocks(Q5_0, 8, 32, q, _f16(b[..., 0:2]), 16, None)


def _q5_1(b: Array) -> Blocks:
    q = _nibbles(b[..., 8:24]) | (_high_bits(b[..., 4:8], 32) << 4)
    return Blocks(Q5_1, 8, 32, q, _f16(b[..., 0:2]), 0, _f16(b[..., 2:4]))


def _q8_0(b: Array) -> Blocks:
    q = (b[..., 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return Blocks(Q8_0, 8, 32, q, _f16(b[..., 0:2]), 128, None)


def _k_scales(s: Array) -> tuple[Array, Array]:
    """ggml's get_scale_min_k4: 12 bytes → eight 6-bit scales and eight 6-bit mins."""
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0x0F) | ((s[..., 0:4] >> 6) << 4)], axis=-1)
    mn = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _k_codes(qs: Array) -> Array:
    """Q4_K/Q5_K low nibbles: 4 chunks of 32 bytes, low nibbles = sub-block 2c, high = 2c + 1."""
    chunks = qs.reshape(*qs.shape[:-1], 4, 32)
    return np.stack([chunks & 0x0F, chunks >> 4], axis=-2).reshape(*qs.shape[:-1], 256)


def _q4_k(b: Array) -> Blocks:
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    sc, mn = _k_scales(b[..., 4:16])
    return Blocks(Q4_K, 4, 32, _k_codes(b[..., 16:144]), d[..., None] * sc, 0, -(dmin[..., None] * mn))


def _q5_k(b: Array) -> Blocks:
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    sc, mn = _k_scales(b[..., 4:16])
    qh = b[..., 16:48]  # bit s of qh[l] is the fifth bit of element l of sub-block s
    high = (qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1
    q = _k_codes(b[..., 48:176]) | (high.reshape(*qh.shape[:-1], 256) << 4)
    return Blocks(Q5_K, 8, 32, q, d[..., None] * sc, 0, -(dmin[..., None] * mn))


def _q6_k(b: Array) -> Blocks:
    ql = b[..., 0:128].reshape(*b.shape[:-1], 2, 64)
    qh = b[..., 128:192].reshape(*b.shape[:-1], 2, 32)
    lo, hi = ql[..., :32], ql[..., 32:]
    parts = [
        (lo & 0x0F) | ((qh & 3) << 4),
        (hi & 0x0F) | (((qh >> 2) & 3) << 4),
        (lo >> 4) | (((qh >> 4) & 3) << 4),
        (hi >> 4) | (((qh >> 6) & 3) << 4),
    ]
    q = np.stack(parts, axis=-2).reshape(*b.shape[:-1], 256)
    sc = b[..., 192:208].view(np.int8).astype(np.float32)
    return Blocks(Q6_K, 8, 16, q, _f16(b[..., 208:210])[..., None] * sc, 32, None)


_DECODERS: dict[int, Callable[[Array], Blocks]] = {
    Q4_0: _q4_0, Q4_1: _q4_1, Q5_0: _q5_0, Q5_1: _q5_1, Q8_0: _q8_0, Q4_K: _q4_k, Q5_K: _q5_k, Q6_K: _q6_k,
}


def unsupported(tensor: str, ggml_type: int) -> InvalidRequest:
    return InvalidRequest(
        f"GGUF tensor {tensor!r} has type {type_name(ggml_type)}, which onnxkit cannot carry over exactly; "
        f"supported types: {SUPPORTED}. Re-quantize the model to one of them with llama.cpp's "
        "llama-quantize (e.g. Q4_K_M), or export with --requantize int4 (dequantize, then round-to-nearest int4)"
    )


def decode(tensor: str, ggml_type: int, raw: Array, rows: int, cols: int) -> Blocks:
    """Raw GGUF bytes of a [rows, cols] quantized tensor → its blocks; refuses unsupported types."""
    decoder = _DECODERS.get(ggml_type)
    if decoder is None:
        raise unsupported(tensor, ggml_type)
    per_block, nbytes = BLOCK_BYTES[ggml_type]
    if cols % per_block:
        raise InvalidRequest(f"GGUF tensor {tensor!r}: row length {cols} is not a multiple of {per_block}")
    data = np.ascontiguousarray(raw).view(np.uint8).reshape(rows, cols // per_block, nbytes)
    blocks = decoder(data)
    # Decoders work per ggml block; flatten to [rows, cols] codes and [rows, cols // block] scales.
    offset = None if blocks.offset is None else blocks.offset.reshape(rows, -1).astype(np.float32)
    return Blocks(
        blocks.type,
        blocks.bits,
        blocks.block,
        blocks.q.reshape(rows, cols).astype(np.uint8),
        blocks.scale.reshape(rows, -1).astype(np.float32),
        blocks.zero_point,
        offset,
    )


def decode_float(tensor: str, ggml_type: int, raw: Array, rows: int, cols: int) -> Array:
    """Raw GGUF bytes of an F32/F16/BF16 tensor → float32 [rows, cols]."""
    data = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if ggml_type == F32:
        values = data.view("<f4").astype(np.float32)
    elif ggml_type == F16:
        values = data.view("<f2").astype(np.float32)
    elif ggml_type == BF16:
        values = (data.view("<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        raise unsupported(tensor, ggml_type)
    return values.reshape(rows, cols)


def packed(blocks: Blocks) -> Array:
    """MatMulNBits' B: [rows, cols / block, block · bits / 8] uint8."""
    rows, cols = blocks.shape
    q: Array = blocks.q.reshape(rows, cols // blocks.block, blocks.block)
    if blocks.bits == 4:  # MatMulNBits: element 2i in the low nibble, 2i + 1 in the high one
        packed: Array = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        return packed
    return q


def zero_points(blocks: Blocks) -> Array | None:
    """None where MatMulNBits' default zero point (2**(bits − 1)) is the GGUF's."""
    if blocks.zero_point == 1 << (blocks.bits - 1):
        return None
    rows, n_blocks = blocks.scale.shape
    if blocks.bits == 8:
        return np.full((rows, n_blocks), blocks.zero_point, np.uint8)
    return np.full((rows, (n_blocks + 1) // 2), blocks.zero_point | (blocks.zero_point << 4), np.uint8)


def concat(parts: list[Blocks]) -> Blocks:
    """Blocks of the same layout stacked along rows (N): packed Q/K/V become one MatMulNBits."""
    if len(parts) == 1:
        return parts[0]
    offsets = None
    if any(p.offset is not None for p in parts):
        offsets = np.concatenate(
            [np.zeros((p.shape[0], p.shape[1] // 32), np.float32) if p.offset is None else p.offset for p in parts]
        )
    first = parts[0]
    q, scale = np.concatenate([p.q for p in parts]), np.concatenate([p.scale for p in parts])
    return Blocks(first.type, first.bits, first.block, q, scale, first.zero_point, offsets)
