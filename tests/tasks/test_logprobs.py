"""Logprobs (runtime.solo + tasks.logprobs): values, token texts, and sampling left as it was."""

from __future__ import annotations

import numpy as np
import onnxruntime_genai as og
import pytest
from tasks_helpers import run

from onnxkit.errors import InvalidRequest
from onnxkit.tasks.chat import ChatModel
from onnxkit.tasks.logprobs import completion_logprobs


def reference_steps(model: ChatModel, prompt: list[int], steps: int, temperature: float = 1.0) -> list[np.ndarray]:
    """Log-softmax of genai's own logits over ``steps`` greedy tokens, computed here from raw onnxruntime-genai."""
    m = og.Model(str(model.path))
    params = og.GeneratorParams(m)
    params.set_search_options(max_length=len(prompt) + steps, do_sample=False)
    g = og.Generator(m, params)
    g.append_tokens(np.asarray(prompt, dtype=np.int32))
    out = []
    for _ in range(steps):
        z = np.asarray(g.get_logits(), dtype=np.float64).reshape(-1) / temperature
        out.append(z - z.max() - np.log(np.exp(z - z.max()).sum()))
        g.generate_next_token()
    return out


async def test_greedy_logprobs_match_genai_logits(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.chat_prompt([{"role": "user", "content": "The capital of France is"}])
    s = tiny_chat.sampling(prompt, max_tokens=6, temperature=0, top_p=None, top_k=None, seed=None, logprobs=5)
    out = await run(tiny_chat, prompt, s)
    plain = await run(tiny_chat, prompt, tiny_chat.sampling(prompt, max_tokens=6, temperature=0, top_p=None,
                                                             top_k=None, seed=None))  # fmt: skip
    assert out.text == plain.text  # the engine's batch and the own generator agree greedily
    assert len(out.logprobs) == out.completion_tokens
    ref = reference_steps(tiny_chat, prompt, len(out.logprobs))
    for entry, lp in zip(out.logprobs, ref, strict=True):
        best = np.argsort(-lp)[:5]
        assert entry.logprob == pytest.approx(lp[best[0]], abs=1e-4)  # greedy: the sampled token is the best
        assert [a.logprob for a in entry.top] == pytest.approx(list(lp[best]), abs=1e-4)
        assert entry.top[0].token == entry.token
    assert b"".join(e.bytes for e in out.logprobs) == out.text.encode()


async def test_same_seed_same_text_with_and_without_logprobs(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.text_prompt("Once upon a time")
    texts = []
    for logprobs in (None, 0, 20):
        s = tiny_chat.sampling(prompt, max_tokens=24, temperature=0.9, top_p=0.95, top_k=None, seed=11,
                               logprobs=logprobs)  # fmt: skip
        out = await run(tiny_chat, prompt, s)
        texts.append(out.text)
        if logprobs is not None:
            assert len(out.logprobs) == out.completion_tokens
            assert all(len(e.top) == logprobs for e in out.logprobs)
            assert all(e.logprob <= 0 for e in out.logprobs)
    assert texts[0] == texts[1] == texts[2]


async def test_sampled_logprobs_use_the_temperature(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.text_prompt("Once upon a time")
    s = tiny_chat.sampling(prompt, max_tokens=1, temperature=0.5, top_p=None, top_k=None, seed=1, logprobs=3)
    out = await run(tiny_chat, prompt, s)
    ref = reference_steps(tiny_chat, prompt, 1, temperature=0.5)[0]
    assert [a.logprob for a in out.logprobs[0].top] == pytest.approx(sorted(ref, reverse=True)[:3], abs=1e-4)


async def test_top_logprobs_bound(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.text_prompt("x")
    with pytest.raises(InvalidRequest, match="expected 0 to 20"):
        tiny_chat.sampling(prompt, max_tokens=1, temperature=0, top_p=None, top_k=None, seed=None, logprobs=21)


async def test_stop_string_cuts_text_and_logprobs_together(tiny_chat: ChatModel) -> None:
    prompt = await tiny_chat.text_prompt("Once upon a time")
    s = tiny_chat.sampling(prompt, max_tokens=30, temperature=0, top_p=None, top_k=None, seed=None, logprobs=1)
    full = await run(tiny_chat, prompt, s)
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 2]
    cut = await run(tiny_chat, prompt, s, stop=[stop])
    assert cut.finish == "stop" and cut.text == full.text[: full.text.index(stop)]
    assert len(cut.logprobs) <= len(full.logprobs)
    assert [e.token for e in cut.logprobs] == [e.token for e in full.logprobs[: len(cut.logprobs)]]


def test_completion_shape() -> None:
    from onnxkit.tasks.logprobs import Alternative, Entry

    entries = [Entry("Hel", b"Hel", -0.5, (Alternative("Hel", b"Hel", -0.5),)), Entry("lo", b"lo", -1.0, ())]
    assert completion_logprobs(entries, 4) == {
        "tokens": ["Hel", "lo"], "token_logprobs": [-0.5, -1.0], "top_logprobs": [{"Hel": -0.5}, {}],
        "text_offset": [4, 7],
    }  # fmt: skip
