"""How one chat or completion choice is written: content or tool calls, logprobs, whole or as deltas.

Part of the OpenAI transport. A chat choice whose request offered tools runs the model's output
through ``tasks.tools.CallParser``: the answer is either content or ``tool_calls``, and streamed
calls go out as OpenAI sends them (the first delta of a call carries its ``index``, ``id``, ``type``
and ``function.name``; later ones append to ``function.arguments``), so the SDK's stream helpers
assemble them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnxkit.tasks.chat import Piece
from onnxkit.tasks.logprobs import Entry, completion_logprobs
from onnxkit.tasks.tools import CallEvent, CallParser, ToolUse


@dataclass
class ChatChoice:
    """One chat choice being written: fed the generation's pieces, it answers deltas or the whole choice."""

    index: int
    tools: ToolUse | None = None
    logprobs: bool = False
    parser: CallParser | None = None
    text: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    closed: bool = False  # its last delta went out

    def __post_init__(self) -> None:
        if self.tools is not None and self.tools.active:
            self.parser = CallParser()

    @property
    def done_calling(self) -> bool:
        """The model began repeating a call: it has said all it will, end the generation."""
        return self.parser is not None and self.parser.repeated

    def feed(self, piece: Piece) -> None:
        self.text.append(piece.text)
        self.entries.extend(piece.logprobs)
        if self.parser is not None and not self.parser.repeated:
            self.parser.feed(piece.text)

    def whole(self, finish: str | None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text)}
        if self.parser is not None:
            content, calls = self.parser.finish()
            message["content"] = content
            if calls:
                message["tool_calls"] = [c.to_openai() for c in calls]
                finish = _calls_finish(finish, self.parser)
        return {"index": self.index, "message": message, "logprobs": self._logprobs(self.entries),
                "finish_reason": finish}  # fmt: skip

    def opening(self) -> dict[str, Any]:
        return {"index": self.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}  # fmt: skip

    def deltas(self, piece: Piece) -> list[dict[str, Any]]:
        """The streamed choice entries one piece makes (none while text is held back)."""
        if self.closed:
            return []
        self.closed = piece.finish is not None
        if self.parser is None:
            delta = {"content": piece.text} if piece.text else {}
            if not delta and piece.finish is None and not piece.logprobs:
                return []
            return [self._entry(delta, piece, piece.finish)]
        events = [] if self.parser.repeated else self.parser.feed(piece.text)
        out = [self._entry(_delta(e), piece if i == 0 else None, None) for i, e in enumerate(events)]
        if piece.logprobs and not events:
            out.append(self._entry({}, piece, None))
        if piece.finish is not None or self.parser.repeated:
            self.closed = True
            pending = self.parser.pending_text()
            finish = _calls_finish(piece.finish or "stop", self.parser) if self.parser.calls else piece.finish
            out.append(self._entry({"content": pending} if pending else {}, None, finish or "stop"))
        return out

    def _entry(self, delta: dict[str, Any], piece: Piece | None, finish: str | None) -> dict[str, Any]:
        entries = list(piece.logprobs) if piece is not None else []
        return {"index": self.index, "delta": delta, "logprobs": self._logprobs(entries) if entries else None,
                "finish_reason": finish}  # fmt: skip

    def _logprobs(self, entries: list[Entry]) -> dict[str, Any] | None:
        return {"content": [e.to_chat() for e in entries], "refusal": None} if self.logprobs else None


def _calls_finish(finish: str | None, parser: CallParser) -> str | None:
    # A turn that ended on its own (end of turn, or a repeated call) answered with calls.
    return "tool_calls" if parser.calls and (finish == "stop" or parser.repeated) else finish


def _delta(event: CallEvent) -> dict[str, Any]:
    if event.index < 0:
        return {"content": event.text}
    call: dict[str, Any] = {"index": event.index}
    if event.name:
        call.update(id=event.id, type="function", function={"name": event.name, "arguments": event.arguments})
    else:
        call["function"] = {"arguments": event.arguments}
    return {"tool_calls": [call]}


@dataclass
class TextChoice:
    """One /v1/completions choice: text (after the prompt when echoed) and the legacy logprobs."""

    index: int
    echo: str = ""
    logprobs: bool = False
    text: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    sent: int = 0  # characters streamed so far, for text_offset
    done_calling = False  # completions have no tools

    def feed(self, piece: Piece) -> None:
        self.text.append(piece.text)
        self.entries.extend(piece.logprobs)

    def whole(self, finish: str | None) -> dict[str, Any]:
        lp = completion_logprobs(self.entries, len(self.echo)) if self.logprobs else None
        return {"index": self.index, "text": self.echo + "".join(self.text), "logprobs": lp, "finish_reason": finish}

    def opening(self) -> dict[str, Any] | None:
        if not self.echo:
            return None
        self.sent = len(self.echo)
        return {"index": self.index, "text": self.echo, "logprobs": None, "finish_reason": None}

    def deltas(self, piece: Piece) -> list[dict[str, Any]]:
        lp = completion_logprobs(list(piece.logprobs), self.sent) if self.logprobs else None
        self.sent += sum(len(e.token) for e in piece.logprobs)
        return [{"index": self.index, "text": piece.text, "logprobs": lp, "finish_reason": piece.finish}]
