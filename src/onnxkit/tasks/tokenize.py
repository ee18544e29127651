"""``/tokenize`` and ``/detokenize`` (vLLM's shape): a model's own tokenizer, as its routes use it.

For a chat model the tokens are exactly those generation runs on: a ``prompt`` is encoded as
``/v1/completions`` encodes it, ``messages`` go through the chat template (and tools) as
``/v1/chat/completions`` renders them. An embeddings model uses its ``tokenizer.json`` without
truncation, so a count over the limit shows as such.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from onnxkit.errors import InvalidRequest
from onnxkit.tasks.chat import ChatModel
from onnxkit.tasks.logprobs import TokenBytes
from onnxkit.tasks.tools import ToolUse


@dataclass(frozen=True)
class Tokenized:
    tokens: list[int]
    max_model_len: int
    strings: list[str] | None = None


class ModelTokens:
    """A served model's tokenizer: the chat model's genai one, or an encoder folder's ``tokenizer.json``."""

    def __init__(
        self, name: str, max_model_len: int, *, chat: ChatModel | None = None, folder: Path | None = None
    ) -> None:
        self.name = name
        self.max_model_len = max_model_len
        self.chat = chat
        path = chat.path if chat is not None else folder
        if path is None:
            raise ValueError("ModelTokens needs a chat model or a folder")
        self.bytes = chat.token_bytes if chat is not None else TokenBytes(path)
        file = path / "tokenizer.json"
        if self.bytes.tokenizer is None or not file.is_file():
            raise InvalidRequest(f"model {name!r} has no tokenizer.json; it cannot tokenize", param="model")
        self.hf: Tokenizer = self.bytes.tokenizer
        self.vocab = self.hf.get_vocab_size(with_added_tokens=True)

    async def text(self, prompt: str, add_special_tokens: bool, strings: bool) -> Tokenized:
        if self.chat is not None:
            if not add_special_tokens:
                raise InvalidRequest(
                    f"model {self.name!r} encodes text as generation does (onnxruntime-genai's tokenizer); "
                    "add_special_tokens false is not supported for chat models",
                    param="add_special_tokens",
                )
            ids = await self.chat.text_prompt(prompt)
        else:
            encoding = await asyncio.to_thread(self.hf.encode, prompt, add_special_tokens=add_special_tokens)
            ids = list(encoding.ids)
        return self._out(ids, strings)

    async def messages(
        self, messages: Sequence[dict[str, Any]], tools: ToolUse | None, generation_prompt: bool, strings: bool
    ) -> Tokenized:
        if self.chat is None:
            raise InvalidRequest(
                f"model {self.name!r} has no chat template; send \"prompt\" instead of \"messages\"", param="messages"
            )
        ids = await self.chat.chat_prompt(messages, tools, need_guidance=False, generation_prompt=generation_prompt)
        return self._out(ids, strings)

    def _out(self, ids: list[int], strings: bool) -> Tokenized:
        texts = [self.bytes.bytes_of(t).decode("utf-8", errors="replace") for t in ids] if strings else None
        return Tokenized(ids, self.max_model_len, texts)

    def detokenize(self, tokens: Sequence[int]) -> str:
        bad = [t for t in tokens if not 0 <= t < self.vocab]
        if bad:
            raise InvalidRequest(
                f"tokens holds ids outside model {self.name!r}'s vocabulary (0..{self.vocab - 1}): {bad[:5]}",
                param="tokens",
            )
        return str(self.hf.decode(list(tokens), skip_special_tokens=False))
