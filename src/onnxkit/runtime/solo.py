"""One generation on its own ``og.Generator``, for what the CPU engine cannot do in its batch.

onnxruntime-genai's engine refuses per-turn seeds on CPU, and its events carry tokens but no
logits. So a request that is seeded, asks for logprobs, or sets OpenAI's additive
``frequency_penalty`` / ``presence_penalty`` (genai offers only a multiplicative repetition
penalty) runs here, one token per step of the engine thread. The logits are read once per token
(``get_logits`` computes them, ``generate_next_token`` then samples from the same ones, so asking
for logprobs does not change what is sampled) and, for the penalties, written back before
sampling; a grammar's mask is applied after that, inside genai.

``guidance_probe`` finds out at load whether this build constrains decoding at all: without
llguidance, ``set_guidance`` only logs a warning and the output is unconstrained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxkit.types import FloatArray


@dataclass(frozen=True)
class Guidance:
    """A grammar for llguidance: ``kind`` is "json_schema", "regex" or "lark_grammar"."""

    kind: str
    data: str


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    min_new_tokens: int = 0  # the end of turn is held off until this many (vLLM's min_tokens)
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    repetition_penalty: float | None = None  # genai's multiplicative penalty (llama.cpp / vLLM extension)
    frequency_penalty: float = 0.0  # OpenAI's: logit -= f * count, over the tokens generated so far
    presence_penalty: float = 0.0  # OpenAI's: logit -= p if generated before
    logprobs: int | None = None  # None: off; k: the sampled token's logprob and the k most likely
    guidance: Guidance | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_k == 1

    @property
    def reads_logits(self) -> bool:
        return self.logprobs is not None or bool(self.frequency_penalty) or bool(self.presence_penalty)

    @property
    def solo(self) -> bool:
        """Runs on its own Generator rather than in the engine's batch."""
        return (self.seed is not None and not self.greedy) or self.reads_logits


@dataclass(frozen=True)
class TokenLogprob:
    logprob: float
    top: tuple[tuple[int, float], ...]  # (token, logprob), most likely first


class GrammarError(ValueError):
    """The grammar did not compile (llguidance's message)."""


def is_grammar_error(exc: BaseException) -> bool:
    return "grammar" in str(exc).lower()


def generator_params(og: Any, model: Any, prompt_len: int, s: Sampling) -> Any:
    params = og.GeneratorParams(model)
    opts: dict[str, Any] = {"max_length": prompt_len + s.max_new_tokens}
    if s.greedy:
        opts["do_sample"] = False
    else:
        opts.update(
            do_sample=True,
            temperature=s.temperature,
            top_k=s.top_k or 0,
            top_p=s.top_p if s.top_p is not None else 1.0,
        )
        if s.seed is not None:
            opts["random_seed"] = s.seed
    if s.repetition_penalty is not None:
        opts["repetition_penalty"] = s.repetition_penalty
    if s.min_new_tokens:
        opts["min_length"] = prompt_len + s.min_new_tokens
    params.set_search_options(**opts)
    if s.guidance is not None:
        params.set_guidance(s.guidance.kind, s.guidance.data)
    return params


class SoloDecoder:
    """A started ``og.Generator`` for one request; ``step`` samples one token."""

    def __init__(self, og: Any, model: Any, prompt: list[int], sampling: Sampling) -> None:
        params = generator_params(og, model, len(prompt), sampling)
        try:
            self.generator = og.Generator(model, params)  # compiles the grammar, if any
        except Exception as exc:
            if sampling.guidance is not None and is_grammar_error(exc):
                raise GrammarError(str(exc)) from exc
            raise
        self.generator.append_tokens(np.asarray(prompt, dtype=np.int32))
        self.sampling = sampling
        self.counts: FloatArray | None = None  # per token, how often generated (for the penalties)

    def step(self) -> tuple[int, TokenLogprob | None]:
        g, s = self.generator, self.sampling
        logits: FloatArray | None = None
        if s.reads_logits:
            raw = g.get_logits()
            logits = raw.reshape(-1)[-raw.shape[-1] :].astype(np.float32, copy=True)
            if s.frequency_penalty or s.presence_penalty:
                if self.counts is None:
                    self.counts = np.zeros(logits.size, dtype=np.float32)
                logits -= s.frequency_penalty * self.counts + s.presence_penalty * (self.counts > 0)
                g.set_logits(logits.reshape(raw.shape))
        g.generate_next_token()
        token = int(g.get_next_tokens()[0])
        if self.counts is not None and 0 <= token < self.counts.size:
            self.counts[token] += 1
        if s.logprobs is None or logits is None:
            return token, None
        return token, token_logprob(logits, token, s)

    def done(self) -> bool:
        return bool(self.generator.is_done())


def log_softmax(logits: FloatArray) -> FloatArray:
    z = logits.astype(np.float64) - float(np.max(logits))
    return np.asarray(z - np.log(np.exp(z).sum()), dtype=np.float32)


def token_logprob(logits: FloatArray, token: int, s: Sampling) -> TokenLogprob:
    """Log-softmax of the distribution sampled from: the (penalised) logits over the temperature."""
    scale = s.temperature if not s.greedy and s.temperature > 0 else 1.0
    lp = log_softmax(logits / scale)
    k = min(s.logprobs or 0, lp.size)
    top: tuple[tuple[int, float], ...] = ()
    if k:
        best = np.argpartition(-lp, k - 1)[:k]
        best = best[np.argsort(-lp[best], kind="stable")]
        top = tuple((int(i), float(lp[i])) for i in best)
    return TokenLogprob(float(lp[token]), top)


def guidance_probe(og: Any, model: Any, prompt: list[int]) -> str:
    """Empty when this build constrains decoding, else why not.

    Two greedy one-token generations from the same prompt, each forced by a regex to a different
    letter: unconstrained, both would pick the same token, so only working guidance yields both.
    """
    outputs = []
    try:
        for letter in ("Q", "Z"):
            s = Sampling(max_new_tokens=1, guidance=Guidance("regex", letter))
            g = og.Generator(model, generator_params(og, model, len(prompt), s))
            g.append_tokens(np.asarray(prompt, dtype=np.int32))
            g.generate_next_token()
            outputs.append(int(g.get_next_tokens()[0]))
    except Exception as exc:  # e.g. a build whose set_guidance raises
        return f"this onnxruntime-genai build cannot constrain decoding ({exc})"
    if len(set(outputs)) < 2:
        return (
            "this onnxruntime-genai build has no guidance (llguidance): set_guidance left the output "
            "unconstrained"
        )
    return ""
