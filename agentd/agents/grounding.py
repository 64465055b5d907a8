"""Numbers an agent run has seen, and tool schemas whose optional numbers may only be one of them.

A small model fills in optional numeric arguments nobody gave it: measured on the openvino engine,
the plain-words request ("fine-tune smollm2 on my tickets, evaluate both, tell me which is better")
called tune_and_evaluate with `max_steps: 100000` and `limit: 100000`, twelve hours of training
nobody asked for. An optional number is a choice the tool makes well by itself (its default, or
"auto") unless the person said one, so the grammar lets a run pass only numbers that appear in
what it has read: the conversation and the tools' observations. Required numbers, and every
other argument, are left as they are.
"""

from __future__ import annotations

import re
from typing import Any

# A number standing on its own: not part of an id (`ftjob-4a3a…`, `file-…`) or a word (`gpt4`).
_NUMBER = re.compile(r"(?<![\w.:/-])\d+(?:\.\d+)?(?![\w:/-]|\.\d)")
_MOST = 64  # numbers offered per argument: the latest ones the run read


class RunNumbers:
    """The numbers a run has read, latest last."""

    def __init__(self) -> None:
        self._seen: dict[float, None] = {}

    def learn_from_text(self, text: str) -> None:
        for match in _NUMBER.finditer(text.replace(",", "")):
            value = float(match[0])
            self._seen.pop(value, None)
            self._seen[value] = None

    def choices(self, schema: dict[str, Any]) -> list[int | float]:
        """The seen numbers that `schema` (an integer or number schema) accepts, latest first."""
        integer = schema.get("type") == "integer"
        chosen: list[int | float] = []
        for value in reversed(self._seen):
            if integer and not value.is_integer():
                continue
            if not _within(value, schema):
                continue
            chosen.append(int(value) if integer else value)
            if len(chosen) == _MOST:
                break
        return chosen


def with_grounded_numbers(parameters: dict[str, Any], numbers: RunNumbers) -> dict[str, Any]:
    """A copy of a tool's parameters where each optional numeric argument is an `enum` of the numbers
    the run has seen that fit it; one with none to offer can no longer be written (its default holds).
    A choice such as `"auto" | number` keeps its other branches."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return parameters
    required = set(parameters.get("required") or ())
    grounded: dict[str, Any] = {}
    for name, schema in properties.items():
        narrowed = schema if name in required else _grounded(schema, numbers)
        if narrowed is not None:
            grounded[name] = narrowed
    return {**parameters, "properties": grounded}


def _grounded(schema: Any, numbers: RunNumbers) -> Any:
    """The schema with its numbers limited to the seen ones; None when nothing it allows is left."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") in ("integer", "number") and "enum" not in schema and "const" not in schema:
        choices = numbers.choices(schema)
        if not choices:
            return None
        return {key: value for key, value in schema.items()
                if key not in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")} | {"enum": choices}
    for union in ("anyOf", "oneOf"):
        if union in schema:
            branches = [branch for branch in (_grounded(b, numbers) for b in schema[union]) if branch is not None]
            if not [b for b in branches if b.get("type") != "null"]:
                return None  # only "null" is left: the argument says nothing, so it is not written
            return {**schema, union: branches}
    return schema


def _within(value: float, schema: dict[str, Any]) -> bool:
    return (("minimum" not in schema or value >= schema["minimum"])
            and ("maximum" not in schema or value <= schema["maximum"])
            and ("exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"])
            and ("exclusiveMaximum" not in schema or value < schema["exclusiveMaximum"]))
