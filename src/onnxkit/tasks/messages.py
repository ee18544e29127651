"""What a chat message may hold, checked before the template sees it; and where a model's template is.

Roles system, user, assistant, developer (rendered as system) and tool; content as a string or a
list of text parts; an assistant's ``tool_calls`` with JSON arguments, and a tool message's
``tool_call_id``. Anything else is a 400 naming the message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxkit.errors import InvalidRequest

ROLES = ("system", "user", "assistant", "developer", "tool")


def chat_template(path: Path) -> str:
    """The chat template's source (where genai reads it from), to see what it knows; "" if none."""
    file = path / "chat_template.jinja"
    if file.is_file():
        return file.read_text(encoding="utf-8")
    config = path / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
        if isinstance(template, list):  # named templates
            return "\n".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
    return ""


def check_message(m: dict[str, Any], i: int) -> dict[str, Any]:
    """A message as the template gets it: known role, text content, tool calls and results checked."""
    role = m.get("role")
    if role not in ROLES:
        raise InvalidRequest(
            f"messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}", param=f"messages[{i}].role"
        )
    out: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": _text(m.get("content"), i)}
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(
                f"messages[{i}] has role 'tool' but no tool_call_id; expected the id of the call it answers",
                param=f"messages[{i}].tool_call_id",
            )
        out["tool_call_id"] = call_id
    calls = m.get("tool_calls")
    if calls:
        if role != "assistant":
            raise InvalidRequest(
                f"messages[{i}] has tool_calls but role {role!r}; only assistant messages carry them",
                param=f"messages[{i}].tool_calls",
            )
        out["tool_calls"] = [_call(c, i, j) for j, c in enumerate(calls)]
    if isinstance(m.get("name"), str):
        out["name"] = m["name"]
    return out


def _call(call: Any, i: int, j: int) -> dict[str, Any]:
    where = f"messages[{i}].tool_calls[{j}]"
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or "arguments" not in fn:
        raise InvalidRequest(
            f'{where} must be {{"id": ..., "type": "function", "function": {{"name": ..., "arguments": "{{...}}"}}}}',
            param=where,
        )
    arguments = fn["arguments"]
    if isinstance(arguments, str):
        try:
            json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                f"{where}.function.arguments is not JSON ({exc.msg}); expected a JSON object as text",
                param=f"{where}.function.arguments",
            ) from exc
    return {"id": str(call.get("id", "")), "type": "function", "function": {"name": fn["name"], "arguments": arguments}}


def _text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequest(
                    f"messages[{index}].content[{j}] is of type {kind!r}; this model accepts only text parts",
                    param=f"messages[{index}].content",
                )
        return "".join(parts)
    raise InvalidRequest(
        f"messages[{index}].content must be a string or a list of text parts", param=f"messages[{index}].content"
    )
