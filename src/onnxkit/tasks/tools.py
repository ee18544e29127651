"""Tool calls: the tools a request declares, how the prompt shows them, the grammar, the parse.

A call is written as Hermes and Qwen write it, one block per call::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A grammar (llguidance Lark, with each function's parameters inlined as a JSON schema) lets the
model answer either in plain text that does not begin with ``<tool_call>``, or with calls whose
arguments match the schema of the function they name; ``tool_choice`` ``required`` or a named
function allows calls only. So even a model never trained on tools produces calls that parse.

A chat template that knows tools (it mentions ``tools``) renders them, the assistant's earlier
``tool_calls`` and the ``tool`` messages itself. For one that does not, the fallback is: the tools
and the call format go into the system message, earlier calls are written as the blocks above in
the assistant's text, and each ``tool`` message becomes a user message holding
``<tool_response>...</tool_response>``.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxkit.errors import InvalidRequest
from onnxkit.tasks.guidance import LAYOUT, Constraint, check_name, prepare_schema

OPEN, CLOSE = "<tool_call>", "</tool_call>"
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    strict: bool = False

    def declaration(self) -> dict[str, Any]:
        """As OpenAI's request carries it (what chat templates expect)."""
        fn = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": fn}


@dataclass(frozen=True)
class ToolUse:
    """The tools a request offers and what it allows: ``choice`` is auto, none, required or a name."""

    tools: tuple[Tool, ...]
    choice: str = "auto"
    parallel: bool = True

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    def allowed(self) -> tuple[Tool, ...]:
        if self.choice in ("auto", "required", "none"):
            return self.tools
        return tuple(t for t in self.tools if t.name == self.choice)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def parse_tools(
    tools: Sequence[Mapping[str, Any]] | None, tool_choice: Any, parallel_tool_calls: bool | None
) -> ToolUse | None:
    if tools is None:
        if tool_choice not in (None, "none"):
            raise InvalidRequest(f"tool_choice is {tool_choice!r} but no tools were sent", param="tool_choice")
        return None
    if not tools:
        raise InvalidRequest("tools is empty; send at least one function, or leave tools out", param="tools")
    parsed: list[Tool] = []
    for i, item in enumerate(tools):
        fn = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(item, Mapping) or item.get("type") != "function" or not isinstance(fn, Mapping):
            raise InvalidRequest(
                f'tools[{i}] must be {{"type": "function", "function": {{"name": ..., "parameters": {{...}}}}}}',
                param=f"tools[{i}]",
            )
        name = check_name(fn.get("name"), f"tools[{i}].function.name")
        params = fn.get("parameters", EMPTY_PARAMETERS)
        if not isinstance(params, Mapping):
            raise InvalidRequest(
                f"tools[{i}].function.parameters is a {type(params).__name__}; expected a JSON schema object",
                param=f"tools[{i}].function.parameters",
            )
        description = fn.get("description") or ""
        parsed.append(Tool(name, str(description), dict(params), bool(fn.get("strict"))))
    names = [t.name for t in parsed]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"tools name a function twice ({', '.join(names)}); names must be unique", param="tools")
    choice = _choice(tool_choice, names)
    return ToolUse(tuple(parsed), choice, True if parallel_tool_calls is None else bool(parallel_tool_calls))


def _choice(tool_choice: Any, names: list[str]) -> str:
    if tool_choice is None:
        return "auto"
    if tool_choice in ("auto", "none", "required"):
        return str(tool_choice)
    if isinstance(tool_choice, Mapping) and tool_choice.get("type") == "function":
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if name not in names:
            raise InvalidRequest(
                f"tool_choice names function {name!r}, which is not among the tools ({', '.join(names)})",
                param="tool_choice",
            )
        return str(name)
    raise InvalidRequest(
        f'tool_choice is {tool_choice!r}; expected "auto", "none", "required" or '
        '{"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


# ---- the prompt -----------------------------------------------------------------------------

FALLBACK_INSTRUCTIONS = (
    "You have access to the following functions:\n<tools>\n{tools}\n</tools>\n"
    "If a function can help answer, call it with\n"
    '<tool_call>\n{{"name": <function name>, "arguments": <arguments as a JSON object>}}\n</tool_call>\n'
    "Otherwise answer in plain text."
)


def render(
    messages: Sequence[Mapping[str, Any]], use: ToolUse | None, template_knows_tools: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Messages (and tools) for the chat template: natively where it knows tools, else the fallback.

    ``tool_choice: "none"`` leaves the tools out of the prompt, so that the model answers in text.
    """
    offered = use.tools if use is not None and use.active else ()
    if template_knows_tools:
        return [_native(m) for m in messages], ([t.declaration() for t in offered] or None)
    out = [_fallback(m) for m in messages]
    if offered:
        listing = "\n".join(json.dumps(t.declaration(), ensure_ascii=False) for t in offered)
        text = FALLBACK_INSTRUCTIONS.format(tools=listing)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{text}" if out[0]["content"] else text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out, None


def _native(message: Mapping[str, Any]) -> dict[str, Any]:
    m = dict(message)
    calls = m.get("tool_calls")
    if calls:
        # Templates write arguments with `| tojson`: they expect an object, not OpenAI's JSON text.
        m["tool_calls"] = [
            {**c, "function": {**c["function"], "arguments": _arguments_object(c["function"]["arguments"])}}
            for c in calls
        ]
        m.setdefault("content", "")
    return m


def _fallback(message: Mapping[str, Any]) -> dict[str, Any]:
    role = message["role"]
    content = message.get("content") or ""
    if role == "tool":
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
    calls = message.get("tool_calls")
    if role == "assistant" and calls:
        blocks = [call_block(c["function"]["name"], _arguments_object(c["function"]["arguments"])) for c in calls]
        return {"role": "assistant", "content": "\n".join([content, *blocks] if content else blocks)}
    return {"role": role, "content": content}


def call_block(name: str, arguments: Any) -> str:
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{OPEN}\n{body}\n{CLOSE}"


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return arguments
    return arguments


# ---- the grammar ----------------------------------------------------------------------------


def grammar(use: ToolUse, answer: Constraint | None = None) -> str:
    """llguidance Lark: text (or ``answer``) or calls, under ``auto``; calls only otherwise."""
    tools = use.allowed()
    rules = [f"fn_{i}: %json {json.dumps(call_schema(t))}" for i, t in enumerate(tools)]
    calls = "call" if not use.parallel else 'call ("\\n" call)*'
    lines = [
        f"calls: {calls}",
        f'call: "{OPEN}\\n" fn "\\n{CLOSE}"',
        "fn: " + " | ".join(f"fn_{i}" for i in range(len(tools))),
        *rules,
    ]
    if use.choice == "auto":
        if answer is None:
            # Plain text that does not begin with a call (leading whitespace included).
            lines[:0] = ["start: TEXT | calls", f"TEXT: /(?s:.*)/ & ~/(?s:[ \\t\\r\\n]*{OPEN}.*)/"]
        else:
            lines[:0] = ["start: answer | calls", f"answer: {answer.lark_rule()}"]
    else:
        lines.insert(0, "start: calls")
    return "\n".join(lines)


def call_schema(tool: Tool) -> dict[str, Any]:
    """``{"name": <const>, "arguments": <parameters>}``, its definitions lifted to the root for ``$ref``."""
    params = copy.deepcopy(tool.parameters)
    defs: dict[str, Any] = {key: params.pop(key) for key in ("$defs", "definitions") if key in params}
    prepared = prepare_schema({**params, **defs}, strict=tool.strict)
    prepared.pop("x-guidance", None)
    lifted = {key: prepared.pop(key) for key in defs}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": prepared},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        **lifted,
        "x-guidance": LAYOUT,
    }


# ---- the parse ------------------------------------------------------------------------------


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class CallEvent:
    """What a piece of output added: ``text`` for content, or a call's ``name`` / ``arguments`` delta."""

    index: int = -1  # the call's index; -1 for content
    text: str = ""
    id: str = ""
    name: str = ""
    arguments: str = ""


END = "}\n" + CLOSE  # a call's JSON object closes, then its block


@dataclass
class CallParser:
    """Splits the model's output into content or tool calls, as it arrives.

    The grammar guarantees the shape, so the parse only follows it: output that begins with
    ``<tool_call>`` is calls, anything else is content. A call's name goes out once known and its
    arguments as they are generated, holding back only what may be the call's closing
    ``}\n</tool_call>``. Small models loop: a call that repeats an earlier one (same name and
    arguments) is never sent, and ``repeated`` tells the caller to end the turn. While a call could
    still be such a repeat (its arguments so far begin an earlier call's), it is held back.
    """

    buffer: str = ""
    mode: str = "?"  # "?" undecided, "text", "calls"
    calls: list[ToolCall] = field(default_factory=list)  # complete calls
    repeated: bool = False
    _at: int = 0  # where the next call's block starts in buffer
    _name: str | None = None  # the current call's, once known
    _id: str = ""
    _args_from: int = 0
    _args_sent: int = -1  # -1: nothing of the current call sent yet

    def feed(self, text: str) -> list[CallEvent]:
        self.buffer += text
        if self.mode == "text":
            return [CallEvent(text=text)]
        if self.mode == "?":
            head = self.buffer.lstrip()
            if len(head) < len(OPEN) and OPEN.startswith(head):
                return []  # could still become a call
            if not head.startswith(OPEN):
                self.mode = "text"
                return [CallEvent(text=self.buffer)]
            self.mode, self._at = "calls", self.buffer.index(OPEN)
        return self._calls()

    def _calls(self) -> list[CallEvent]:
        events: list[CallEvent] = []
        while not self.repeated:
            if self._name is None and not self._begin():
                return events
            end = self.buffer.find(END, self._args_from)
            upto = end if end >= 0 else len(self.buffer) - _held(self.buffer, END)
            args = self.buffer[self._args_from : upto]
            index = len(self.calls)
            if self._args_sent < 0 and self._may_repeat(args, complete=end >= 0):
                if end < 0:
                    return events  # held back: it may be a repeat
                self.repeated = True
                return events
            if self._args_sent < 0:
                events.append(CallEvent(index=index, id=self._id, name=self._name or ""))
                self._args_sent = self._args_from
            if upto > self._args_sent:
                events.append(CallEvent(index=index, arguments=self.buffer[self._args_sent : upto]))
                self._args_sent = upto
            if end < 0:
                return events
            self.calls.append(ToolCall(self._id, self._name or "", args))
            self._at, self._name, self._args_sent = end + len(END), None, -1
        return events

    def _begin(self) -> bool:
        """Read the next call's name, once its block has got that far."""
        start = self.buffer.find(OPEN, self._at)
        marker = '"arguments": '
        at = self.buffer.find(marker, start) if start >= 0 else -1
        if at < 0:
            return False
        head = self.buffer[self.buffer.index("{", start) : at].rstrip(", ") + "}"
        try:
            self._name = str(json.loads(head)["name"])
        except (ValueError, KeyError, TypeError):
            return False  # not the shape the grammar allows; left as it is
        self._id, self._args_from, self._args_sent = new_call_id(), at + len(marker), -1
        return True

    def _may_repeat(self, args: str, complete: bool) -> bool:
        same = [c.arguments for c in self.calls if c.name == self._name]
        return any(a == args for a in same) if complete else any(a.startswith(args) for a in same)

    def finish(self) -> tuple[str | None, list[ToolCall]]:
        """Content (None when the answer was calls) and the complete calls, once output has ended."""
        if self.mode != "calls" or not self.calls:
            return self.buffer, []
        return None, list(self.calls)

    def pending_text(self) -> str:
        """Output still held back as undecided when it ended (it never became a call): content."""
        return self.buffer if self.mode == "?" else ""


def _held(text: str, tail: str) -> int:
    """How many trailing characters of ``text`` could begin ``tail``."""
    for k in range(min(len(tail), len(text)), 0, -1):
        if text.endswith(tail[:k]):
            return k
    return 0
