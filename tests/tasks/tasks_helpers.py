"""Shared by the task tests: a whole generation collected in-process."""

from __future__ import annotations

from collections.abc import Sequence

from onnxkit.runtime.genai import Sampling
from onnxkit.tasks.chat import ChatModel, Piece


async def run(model: ChatModel, prompt: list[int], sampling: Sampling, stop: Sequence[str] = ()) -> Piece:
    """The whole generation as one piece: text, finish reason, usage and every logprob."""
    text, logprobs, last = [], [], Piece("")
    async for _, piece in model.generate([(prompt, sampling)], stop):
        text.append(piece.text)
        logprobs.extend(piece.logprobs)
        last = piece
    return Piece("".join(text), last.finish, last.prompt_tokens, last.completion_tokens, tuple(logprobs))
