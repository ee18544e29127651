"""Logprobs as OpenAI returns them: each token's text and bytes, its logprob, the top alternatives.

A token's text is its own bytes decoded, not the text of the sequence around it: a byte-level BPE
token may hold part of a UTF-8 character, so its ``bytes`` are what puts such characters back
together (and its ``token`` shows U+FFFD for the partial character), as in OpenAI's answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from onnxkit.runtime.genai import TokenLogprob


@dataclass(frozen=True)
class Alternative:
    token: str
    bytes: bytes
    logprob: float


@dataclass(frozen=True)
class Entry:
    """One generated token's logprob, with the ``top_logprobs`` most likely tokens at its position."""

    token: str
    bytes: bytes
    logprob: float
    top: tuple[Alternative, ...]

    def to_chat(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": list(self.bytes),
            "top_logprobs": [{"token": a.token, "logprob": a.logprob, "bytes": list(a.bytes)} for a in self.top],
        }


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class TokenBytes:
    """Token id → the bytes it stands for, from the model folder's ``tokenizer.json``."""

    def __init__(self, path: Path) -> None:
        file = path / "tokenizer.json"
        self.tokenizer = Tokenizer.from_file(str(file)) if file.is_file() else None
        decoder = json.loads(file.read_text()).get("decoder") if file.is_file() else None
        self.byte_level = _mentions(decoder, "ByteLevel")
        self.table = _byte_decoder()
        self.bytes_of = lru_cache(maxsize=65536)(self._bytes)

    def _bytes(self, token: int) -> bytes:
        piece = self.tokenizer.id_to_token(token) if self.tokenizer is not None else None
        if piece is None:
            return b""
        if self.byte_level and all(ch in self.table for ch in piece):
            return bytes(self.table[ch] for ch in piece)
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # sentencepiece byte fallback
            return bytes([int(piece[3:5], 16)])
        return piece.replace("▁", " ").encode("utf-8")

    def entry(self, token: int, logprob: TokenLogprob) -> Entry:
        raw = self.bytes_of(token)
        top = tuple(Alternative(_text(b := self.bytes_of(t)), b, lp) for t, lp in logprob.top)
        return Entry(_text(raw), raw, logprob.logprob, top)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _mentions(decoder: Any, kind: str) -> bool:
    if isinstance(decoder, dict):
        return decoder.get("type") == kind or any(_mentions(d, kind) for d in decoder.get("decoders", []) or [])
    return False


def completion_logprobs(entries: list[Entry], start: int = 0) -> dict[str, Any]:
    """The legacy /v1/completions shape: parallel lists, ``text_offset`` counted from ``start``."""
    offsets, at = [], start
    for e in entries:
        offsets.append(at)
        at += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{a.token: a.logprob for a in e.top} for e in entries],
        "text_offset": offsets,
    }
