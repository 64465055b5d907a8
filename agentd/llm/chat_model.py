"""The chat-model interface agents use, whatever serves the model.

Three requests cover every agent: `chat` (free text), `structured` (a JSON value matching a
schema: plans, sub-question graphs) and `act` (one ReAct step: a thought and at least one
tool call). The local engine satisfies `structured` and `act` by constrained decoding, so a
135M model cannot produce a malformed plan or call; `constrained=False` turns that off (for
measuring what it buys). An upstream uses its native tool calling.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jsonschema

from agentd.llm.tool_calls import inline_refs, new_call_id


@dataclass(frozen=True)
class ToolCall:
    """A tool call below the server: what a model asked for, what graph state keeps, what a
    `ToolCallStep` shows. (The OpenAI wire shape stays in agentd/server/protocol.py.)"""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class ChatReply:
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    # Set when the model's output could not be read as calls (only possible unconstrained).
    error: str | None = None
    raw: str = ""


class StructuredOutputError(ValueError):
    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.raw = raw


def prompt(name: str, **values: str) -> str:
    """Prompts are data files in agentd/llm/prompts/."""
    text = resources.files("agentd.llm").joinpath(f"prompts/{name}.txt").read_text()
    return text.format(**values) if values else text


class ChatModel(ABC):
    id: str
    constrained: bool = True

    @abstractmethod
    async def chat(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0) -> str:
        """Free text."""

    @abstractmethod
    async def structured(self, messages: list[dict[str, str]], schema: dict[str, Any], *,
                         max_tokens: int = 512) -> Any:
        """A JSON value valid against `schema`; StructuredOutputError otherwise."""

    @abstractmethod
    async def act(self, messages: list[dict[str, str]], tools: list[dict[str, Any]], *,
                  max_calls: int = 3, max_tokens: int = 384) -> ChatReply:
        """One step: a thought and 1..max_calls tool calls among `tools` (OpenAI definitions)."""


# Strings in a step are bounded so that a rambling model still closes its JSON within max_tokens.
MAX_STRING = 240


def bounded_strings(schema: Any, limit: int = MAX_STRING) -> Any:
    """A copy of `schema`, its `$ref`s inlined (it is about to be nested in a step or plan schema),
    where every free string has a maxLength (at most `limit`)."""
    return _bounded(inline_refs(schema), limit)


def _bounded(schema: Any, limit: int) -> Any:
    if isinstance(schema, list):
        return [_bounded(item, limit) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: _bounded(value, limit) for key, value in schema.items()}
    if bounded.get("type") == "string" and not ({"enum", "const", "pattern", "format"} & bounded.keys()):
        bounded["maxLength"] = min(bounded.get("maxLength", limit), limit)
    return bounded


def step_schema(tools: list[dict[str, Any]], max_calls: int) -> dict[str, Any]:
    """What one ReAct step must look like: a thought, then calls valid against each tool's schema."""
    variants = [{"type": "object", "properties": {"name": {"const": t["function"]["name"]},
                                                  "arguments": bounded_strings(t["function"]["parameters"])},
                 "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    return {"type": "object", "properties": {
        # Bounded: a small model otherwise keeps "thinking" until max_tokens.
        "thought": {"type": "string", "maxLength": 120},
        "tool_calls": {"type": "array", "items": variants[0] if len(variants) == 1 else {"anyOf": variants},
                       "minItems": 1, "maxItems": max_calls}},
        "required": ["thought", "tool_calls"], "additionalProperties": False}


def describe_tools(tools: list[dict[str, Any]]) -> str:
    """One line per tool: name, first line of the description, argument names and types."""
    lines = []
    for t in tools:
        function = t["function"]
        if function["name"] == "final_answer":
            continue
        properties = function["parameters"].get("properties", {})
        arguments = ", ".join(f"{name}: {prop.get('type', 'value')}" for name, prop in properties.items())
        lines.append(f"{function['name']}({arguments}): {function['description'].splitlines()[0]}")
    return "\n".join(lines)


def parse_json(raw: str, schema: dict[str, Any]) -> Any:
    """Read the first JSON value in `raw` and check it; constrained output always passes."""
    text = raw.strip()
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise StructuredOutputError("the reply contains no JSON", raw)
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as error:
        raise StructuredOutputError(f"the reply is not valid JSON ({error.msg})", raw) from None
    problems = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
    if problems:
        best = jsonschema.exceptions.best_match(problems)
        where = "/".join(map(str, best.absolute_path)) or "the reply"
        raise StructuredOutputError(f"{where}: {best.message[:300]}", raw)
    return value


def reply_from_step(raw: str, tools: list[dict[str, Any]], max_calls: int) -> ChatReply:
    try:
        step = parse_json(raw, step_schema(tools, max_calls))
    except StructuredOutputError as error:
        return ChatReply(content="", error=str(error), raw=raw)
    calls = [ToolCall(new_call_id(), call["name"], call["arguments"]) for call in step["tool_calls"]]
    return ChatReply(content=step["thought"].strip(), tool_calls=calls, raw=raw)

