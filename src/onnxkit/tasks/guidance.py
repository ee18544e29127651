"""What a request constrains its output to, as a grammar for llguidance.

- ``response_format``: ``json_object``, ``json_schema`` (OpenAI's), and two onnxkit extensions,
  ``regex`` and ``grammar`` (llguidance's Lark dialect); vLLM's ``guided_choice`` list.
- JSON is written the way a model has seen it written: ``", "`` and ``": "`` between items and keys
  and no other whitespace. llguidance's default allows free whitespace anywhere, and a small model
  then fills its budget with newlines.
- Numbers get at most 16 digits before the point where the schema sets no ``minimum`` / ``maximum``
  (llama.cpp's bound too): a small model otherwise repeats a digit until the budget ends.
- Objects that declare ``properties`` get no others unless the schema says otherwise
  (``additionalProperties``), as llama.cpp's server does; otherwise a small model repeats keys until
  the budget ends. Output without extra keys still validates against the schema as sent. With
  ``strict: true`` every object, declared properties or not, is closed, as OpenAI's strict mode requires.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onnxkit.errors import InvalidRequest
from onnxkit.runtime.solo import Guidance

# llguidance's JSON layout options, at the top level of a schema (its "x-guidance" key).
LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Keys whose values are schemas, or maps / lists of schemas: walked to close objects.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "not", "if", "then", "else", "contains", "additionalItems", "propertyNames")
FORMATS = ("text", "json_object", "json_schema", "regex", "grammar")


@dataclass(frozen=True)
class Constraint:
    """A parsed output constraint: exactly one of its fields is set."""

    schema: dict[str, Any] | None = None  # a prepared JSON schema (layout and closed objects applied)
    regex: str | None = None
    grammar: str | None = None  # Lark
    choices: tuple[str, ...] | None = None

    def guidance(self) -> Guidance:
        if self.schema is not None:
            return Guidance("json_schema", json.dumps(self.schema))
        if self.regex is not None:
            return Guidance("regex", self.regex)
        if self.grammar is not None:
            return Guidance("lark_grammar", self.grammar)
        assert self.choices is not None
        return Guidance("lark_grammar", "start: " + " | ".join(lark_string(c) for c in self.choices))

    def lark_rule(self) -> str:
        """The body of a Lark rule that matches this constraint (to combine it with tool calls)."""
        if self.schema is not None:
            return "%json " + json.dumps(self.schema)
        if self.regex is not None:
            return "/" + self.regex.replace("/", "\\/") + "/"
        if self.choices is not None:
            return " | ".join(lark_string(c) for c in self.choices)
        raise InvalidRequest(
            'response_format {"type": "grammar"} cannot be combined with tools; send one or the other, '
            'or "tool_choice": "none"',
            param="response_format",
        )


def lark_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def from_request(response_format: Mapping[str, Any] | None, guided_choice: Sequence[str] | None) -> Constraint | None:
    """The constraint a chat or completions request asks for, or None for free text."""
    if guided_choice is not None:
        if response_format is not None and response_format.get("type", "text") != "text":
            raise InvalidRequest(
                "send either response_format or guided_choice, not both", param="guided_choice"
            )
        choices = tuple(guided_choice)
        if not choices or any(not isinstance(c, str) or not c for c in choices):
            raise InvalidRequest(
                "guided_choice must be a non-empty list of non-empty strings", param="guided_choice"
            )
        return Constraint(choices=choices)
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint(schema=prepare_schema({"type": "object"}, strict=False))
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise InvalidRequest(
                'response_format json_schema needs "json_schema": {"name": ..., "schema": {...}}',
                param="response_format.json_schema",
            )
        schema = spec.get("schema", {})
        if not isinstance(schema, Mapping):
            raise InvalidRequest(
                f"response_format.json_schema.schema is a {type(schema).__name__}; expected a JSON schema object",
                param="response_format.json_schema.schema",
            )
        return Constraint(schema=prepare_schema(schema, strict=bool(spec.get("strict"))))
    if kind == "regex":
        return Constraint(regex=_string_field(response_format, "regex"))
    if kind == "grammar":
        return Constraint(grammar=_string_field(response_format, "grammar"))
    raise InvalidRequest(
        f"response_format.type is {kind!r}; expected one of {', '.join(FORMATS)}", param="response_format.type"
    )


def _string_field(response_format: Mapping[str, Any], key: str) -> str:
    value = response_format.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(
            f'response_format {{"type": "{key}"}} needs "{key}": a non-empty string', param=f"response_format.{key}"
        )
    return value


def prepare_schema(schema: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
    """A copy of ``schema`` with objects closed (see the module's docstring) and the compact layout."""
    out = copy.deepcopy(dict(schema))
    _close(out, strict)
    layout = out.get("x-guidance")
    out["x-guidance"] = {**LAYOUT, **(layout if isinstance(layout, Mapping) else {})}
    return out


BIGGEST = {"integer": 10**16 - 1, "number": 1e16}  # 16 digits before the point, as llama.cpp allows


def _close(node: Any, strict: bool) -> None:
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind in BIGGEST:
        if "minimum" not in node and "exclusiveMinimum" not in node:
            node["minimum"] = -BIGGEST[kind]
        if "maximum" not in node and "exclusiveMaximum" not in node:
            node["maximum"] = BIGGEST[kind]
    is_object = node.get("type") == "object" or (isinstance(node.get("type"), list) and "object" in node["type"])
    declares = "properties" in node
    if (is_object or declares) and "additionalProperties" not in node and (declares or strict):
        node["additionalProperties"] = False
    for key in _SCHEMA_MAPS:
        sub = node.get(key)
        if isinstance(sub, dict):
            for value in sub.values():
                _close(value, strict)
    for key in _SCHEMA_LISTS:
        sub = node.get(key)
        if isinstance(sub, list):
            for value in sub:
                _close(value, strict)
    for key in (*_SCHEMA_ONE, "additionalProperties"):
        _close(node.get(key), strict)


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_name(name: Any, param: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            f"{param} is {name!r}; expected 1-64 letters, digits, underscores or dashes", param=param
        )
    return name
