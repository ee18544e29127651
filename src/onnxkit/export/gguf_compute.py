"""How the GGUF's blocks are multiplied: MatMulNBits' accuracy level and block length per weight group.

The weights are the GGUF's whatever is chosen here; what changes is the activations' precision.
``accuracy_level`` 0 keeps activations in float32, so the product is the dequantized model's to
float rounding; 4 quantizes them to int8 per weight block at run time, as llama.cpp's CPU kernels
do, which runs the layer matrices about twice as fast on this CPU at decode (one row of
activations) and lm_head about three times as fast.

Measured on SmolLM2-135M (Q4_1 layers, Q8_0 tied embedding/lm_head) against the dequantized float
model: next-token logits cosine on the export gate's 6 prompts, and greedy 32-token continuations
identical to the float model's on 20 chat prompts chosen for this (none of them the integration
test's twenty, whose count follows in brackets):

    every matrix at level 0 (EXACT)                     cosine 1.0      18 of 20   (18)
    every matrix at level 4                             cosine 0.976     3 of 20    (2)
    layers at level 4 in blocks of 16, lm_head at 0     cosine 0.998     2 of 20    (2)
    only q/k/v at level 4                               cosine 0.995     1 of 20    (3)
    only o_proj at level 4                              cosine 0.9997   12 of 20   (14)
    only gate/up at level 4                             cosine 0.997     5 of 20   (10)
    only down_proj at level 4                           cosine 0.997     7 of 20    (6)
    only lm_head at level 4 (blocks of 16)              cosine 0.9999   13 of 20   (11)
    only lm_head's low 4-bit half at level 4            cosine 0.99999  16 of 20   (15)

No group of this model takes int8 activations without moving its greedy answers, although several
pass the cosine gate: the default is EXACT, and the other plans stay available to callers, whose
builds the gate then judges like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def __post_init__(self) -> None:
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ValueError(f"accuracy_level {self.accuracy_level} is not MatMulNBits'; expected 0 to 4")
        if self.block is not None and self.block not in (16, 32):
            raise ValueError(f"block {self.block} cannot hold GGUF blocks; expected None (the GGUF's), 16 or 32")

    def card(self) -> JSON:
        return {"accuracy_level": self.accuracy_level, "block": self.block or "gguf"}


@dataclass(frozen=True)
class Plan:
    """Compute per weight group: the transformer layers' projections, and lm_head."""

    layers: Compute
    lm_head: Compute

    @classmethod
    def uniform(cls, accuracy_level: int) -> Plan:
        return cls(Compute(accuracy_level), Compute(accuracy_level))

    def of(self, weight: str) -> Compute:
        """The compute of a builder weight initializer (``LM_HEAD`` or a layer's projection)."""
        return self.lm_head if weight == LM_HEAD else self.layers

    def card(self) -> JSON:
        return {"layers": self.layers.card(), "lm_head": self.lm_head.card()}


EXACT = Plan.uniform(0)
DEFAULT_PLAN = EXACT
