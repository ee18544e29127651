"""Penalties: OpenAI's additive frequency/presence penalties and genai's repetition penalty."""

from __future__ import annotations

import numpy as np
import onnxruntime_genai as og
import pytest
from tasks_helpers import run

from onnxkit.errors import InvalidRequest
from onnxkit.runtime.genai import Sampling
from onnxkit.tasks.chat import ChatModel


def greedy(model: ChatModel, prompt: list[int], **penalties: float) -> Sampling:
    return model.sampling(prompt, max_tokens=40, temperature=0, top_p=None, top_k=None, seed=None, **penalties)


async def test_presence_penalty_stops_repeats(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.text_prompt("Once upon a time")
    plain = await run(tiny_chat, prompt, greedy(tiny_chat, prompt))
    penalised = await run(tiny_chat, prompt, greedy(tiny_chat, prompt, presence_penalty=2.0))
    # The random model repeats itself greedily; a penalty of 2 (its logits span far less) forbids repeats.
    plain_ids, pen_ids = await tiny_chat.text_prompt(plain.text), await tiny_chat.text_prompt(penalised.text)
    assert len(set(plain_ids)) < len(plain_ids)
    assert penalised.text != plain.text
    assert len(set(pen_ids)) >= len(set(plain_ids))


async def test_frequency_penalty_matches_the_formula(tiny_chat: ChatModel) -> None:
    """The first token that the penalty changes is the argmax of logits - f * count, computed here."""
    prompt = await tiny_chat.text_prompt("Once upon a time")
    f = 0.05
    s = tiny_chat.sampling(prompt, max_tokens=40, temperature=0, top_p=None, top_k=None, seed=None, logprobs=0,
                           frequency_penalty=f)  # fmt: skip
    got = await run(tiny_chat, prompt, s)
    m = og.Model(str(tiny_chat.path))
    params = og.GeneratorParams(m)
    params.set_search_options(max_length=len(prompt) + 40, do_sample=False)
    g = og.Generator(m, params)
    g.append_tokens(np.asarray(prompt, dtype=np.int32))
    counts: np.ndarray | None = None
    want: list[int] = []
    for _ in range(got.completion_tokens):
        logits = np.asarray(g.get_logits(), dtype=np.float32)
        counts = np.zeros(logits.size, dtype=np.float32) if counts is None else counts
        penalised = logits.reshape(-1) - f * counts
        want.append(int(np.argmax(penalised)))
        counts[want[-1]] += 1
        g.set_logits(penalised.reshape(logits.shape))
        g.generate_next_token()
    # the tokens themselves (their bytes): a text decode of random tokens may hide partial characters
    assert b"".join(e.bytes for e in got.logprobs) == b"".join(tiny_chat.token_bytes.bytes_of(t) for t in want)
    plain = await run(tiny_chat, prompt, greedy(tiny_chat, prompt))
    assert plain.text != got.text  # the penalty changed something, so the comparison above means something


async def test_repetition_penalty_in_the_engine_batch(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.text_prompt("Once upon a time")
    plain = await run(tiny_chat, prompt, greedy(tiny_chat, prompt))
    penalised = await run(tiny_chat, prompt, greedy(tiny_chat, prompt, repetition_penalty=5.0))
    assert penalised.text != plain.text
    with pytest.raises(InvalidRequest, match="repetition_penalty is 0"):
        greedy(tiny_chat, prompt, repetition_penalty=0.0)


@pytest.mark.integration
async def test_min_tokens_holds_off_the_end_of_turn(smollm: ChatModel) -> None:
    prompt = await smollm.chat_prompt([{"role": "user", "content": "Reply with one word: what colour is grass?"}])
    short = await run(smollm, prompt, greedy(smollm, prompt))
    assert short.finish == "stop" and short.completion_tokens < 38, short  # greedy, it ends by itself
    for seed in (None, 4):  # the engine's batch, and an own generator
        s = smollm.sampling(prompt, max_tokens=60, min_tokens=50, temperature=0 if seed is None else 0.8,
                            top_p=None, top_k=None, seed=seed)  # fmt: skip
        out = await run(smollm, prompt, s)
        assert out.completion_tokens >= 50
    with pytest.raises(InvalidRequest, match="min_tokens is 61"):
        smollm.sampling(prompt, max_tokens=60, min_tokens=61, temperature=0, top_p=None, top_k=None, seed=None)
