"""How the GGUF's blocks are multiplied, per weight group: onnxkit's BlockMatMul, or MatMulNBits at an accuracy level.

The weights are the GGUF's whatever is chosen here; what changes is the activations' precision.
``accuracy_level`` 0 keeps activations in float32, so the product is the dequantized model's to
float rounding; 4 quantizes them to int8 per weight block at run time, as llama.cpp's CPU kernels
do, which runs the layer matrices about twice as fast on this CPU at decode (one row of
activations) and lm_head about three times as fast.

Measured on SmolLM2-135M (Q4_1 layers, Q8_0 tied embedding/lm_head) against the dequantized float
model: next-token logits cosine on the export gate's 6 prompts, and greedy 32-token continuations
identical to the float model's on 20 chat prompts chosen for this (bench_gguf.DEV_PROMPTS; none of
them the integration test's twenty, whose count follows in brackets); `bench/bench_gguf.py
--parity` measures each plan again:

    onnxkit's BlockMatMul, float32 (KERNEL; default)    cosine 1.0      18 of 20   (18)
    every matrix at level 0 (EXACT)                     cosine 1.0      18 of 20   (18)
    every matrix at level 4                             cosine 0.998     5 of 20    (5)
    layers at level 4 in blocks of 16, lm_head at 0     cosine 0.998     7 of 20    (9)
    only q/k/v at level 4                               cosine 0.998     9 of 20    (7)
    only o_proj at level 4                              cosine 0.9999   14 of 20   (14)
    only gate/up at level 4                             cosine 0.9987   10 of 20   (12)
    only down_proj at level 4                           cosine 0.9997    7 of 20   (10)
    only lm_head at level 4 (blocks of 16)              cosine 0.9999   13 of 20   (11)
    llama.cpp itself (its int8-activation kernels)                       6 of 20   (10)

(With 4-bit codes with a min written about zero point 8, ``Blocks.recentred``; before that, their
int8-activation error had a mean component and every level-4 row was worse, e.g. every matrix
at level 4: cosine 0.976, 3 of 20.) Even the exact plan differs on 2 of 20: float32 rounding
alone moves a greedy path over 32 tokens.

No group of this model takes int8 activations without moving its greedy answers, although several
pass the cosine gate. MatMulNBits with float32 activations is onnxruntime's slow kernel, though: the
exact build decoded at 0.46× the re-quantized int4 build. So the default is onnxkit's own operator,
``KERNEL`` (``export.kernels``' BlockMatMul): the same float32 arithmetic on the GGUF's blocks in
one pass, with EXACT's answers and 2.5× its raw decode speed (150 tokens/s against 60; every
matrix at level 4: 114), and faster than the int4 build through the server (bench/bench_gguf.py).
Where the kernel cannot be built (no C compiler) the default is EXACT. The other plans stay
available to callers, whose builds the gate then judges like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxkit.export import kernels
from onnxkit.types import JSON

LM_HEAD = "lm_head.MatMul.weight"  # the builder's name for the output projection's weight


@dataclass(frozen=True)
class Compute:
    """How MatMulNBits runs one group of weights.

    ``block``: MatMulNBits' block length. None keeps the GGUF's; a divisor (16) splits each block
    with its scale repeated, so that at level 4 each int8 activation scale covers fewer values.
    """

    accuracy_level: int
    block: int | None = None
    kernel: bool = False  # onnxkit's BlockMatMul (export.kernels) instead of MatMulNBits

    def __post_init__(self) -> None:
        if self.kernel and (self.accuracy_level != 0 or self.block is not None):
            raise ValueError("BlockMatMul keeps float32 activations and the GGUF's blocks: level 0, block None")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ValueError(f"accuracy_level {self.accuracy_level} is not MatMulNBits'; expected 0 to 4")
        if self.block is not None and self.block not in (16, 32):
            raise ValueError(f"block {self.block} cannot hold GGUF blocks; expected None (the GGUF's), 16 or 32")

    def card(self) -> JSON:
        if self.kernel:
            return {"op": "onnxkit.BlockMatMul", "activations": "float32", "block": "gguf"}
        return {"op": "MatMulNBits", "accuracy_level": self.accuracy_level, "block": self.block or "gguf"}


PROJECTIONS = ("qkv", "q", "k", "v", "o", "gate", "up", "down")  # the builder's {name}_proj weights


@dataclass(frozen=True)
class Plan:
    """Compute per weight group: the transformer layers' projections, and lm_head.

    ``projections`` overrides ``layers`` for the named projections of every layer, e.g.
    ``(("o", Compute(4)),)``.
    """

    layers: Compute
    lm_head: Compute
    projections: tuple[tuple[str, Compute], ...] = ()

    def __post_init__(self) -> None:
        unknown = [name for name, _ in self.projections if name not in PROJECTIONS]
        if unknown:
            raise ValueError(f"projections {unknown} are not the builder's; expected some of {', '.join(PROJECTIONS)}")

    @classmethod
    def uniform(cls, accuracy_level: int) -> Plan:
        return cls(Compute(accuracy_level), Compute(accuracy_level))

    def of(self, weight: str) -> Compute:
        """The compute of a builder weight initializer (``LM_HEAD`` or a layer's projection)."""
        if weight == LM_HEAD:
            return self.lm_head
        for name, compute in self.projections:
            if f".{name}_proj." in weight:
                return compute
        return self.layers

    def card(self) -> JSON:
        card: JSON = {"layers": self.layers.card(), "lm_head": self.lm_head.card()}
        if self.projections:
            card["projections"] = {name: compute.card() for name, compute in self.projections}
        return card


EXACT = Plan.uniform(0)
KERNEL = Plan(Compute(0, kernel=True), Compute(0, kernel=True))


def default_plan() -> Plan:
    """KERNEL where its library builds on this machine (it needs a C compiler), else EXACT."""
    return KERNEL if kernels.library() is not None else EXACT
