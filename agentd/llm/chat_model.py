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
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jsonschema

from agentd.llm.streaming import TextCallback
from agentd.llm.tool_calls import inline_refs, new_call_id, one_of


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
    # Tools the model was trained to call (a tool-use adapter's): prompts name them without describing them.
    known_tools: frozenset[str] = frozenset()
    # Narrows a run's first call to the tools a request is likely to need (agentd.tool_use.router).
    router: Any = None

    def list_tools(self, tools: list[dict[str, Any]]) -> str:
        """The tool listing a prompt shows this model."""
        return describe_tools(tools, self.known_tools)

    @abstractmethod
    async def chat(self, messages: list[dict[str, str]], *, max_tokens: int = 512, temperature: float = 0.0,
                   on_text: TextCallback | None = None) -> str:
        """Free text, stripped. `on_text` gets it in pieces as it is written (they add up to the
        returned text; a model that cannot stream may send it whole at the end)."""

    @abstractmethod
    async def structured(self, messages: list[dict[str, str]], schema: dict[str, Any], *,
                         max_tokens: int = 512) -> Any:
        """A JSON value valid against `schema`; StructuredOutputError otherwise."""

    @abstractmethod
    async def act(self, messages: list[dict[str, str]], tools: list[dict[str, Any]], *,
                  max_calls: int = 3, max_tokens: int = 384, on_answer: TextCallback | None = None,
                  only: Collection[str] | None = None) -> ChatReply:
        """One step: a thought and 1..max_calls tool calls among `tools` (OpenAI definitions).

        `only` limits the calls to these tools while the prompt still lists all of `tools` (what a
        tool-use adapter was trained to read).

        `on_answer` gets the `answer` of a final_answer call in pieces as it is written (they add up
        to that answer, stripped; a model that cannot stream may send it whole at the end).
        """


# Strings in a step are bounded so that a rambling model still closes its JSON within max_tokens.
MAX_STRING = 240
# …except the final answer, which may quote what the tools returned (a comparison table, say).
MAX_ANSWER = 1200
# A step's (or a plan step's) thought is bounded: a small model otherwise keeps "thinking" until max_tokens.
THOUGHT = {"type": "string", "maxLength": 120}


def string_limit(tool_name: str) -> int:
    """How long a string argument of `tool_name` may be in a step."""
    return MAX_ANSWER if tool_name == "final_answer" else MAX_STRING


def final_answer_of(reply: ChatReply) -> str | None:
    """The answer of the reply's first final_answer call, stripped; None without one."""
    final = next((c for c in reply.tool_calls if c.name == "final_answer"), None)
    return None if final is None else str(final.arguments.get("answer", "")).strip()


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


def callable_tools(tools: list[dict[str, Any]], only: Collection[str] | None) -> list[dict[str, Any]]:
    """The tools of `tools` named in `only` (all of them when None, or when `only` names none of them)."""
    if only is None:
        return tools
    return [t for t in tools if t["function"]["name"] in only] or tools


def step_schema(tools: list[dict[str, Any]], max_calls: int) -> dict[str, Any]:
    """What one ReAct step must look like: a thought, then calls valid against each tool's schema."""
    variants = [{"type": "object", "properties": {"name": {"const": t["function"]["name"]},
                                                  "arguments": bounded_strings(t["function"]["parameters"],
                                                                               string_limit(t["function"]["name"]))},
                 "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
    return {"type": "object", "properties": {
        "thought": dict(THOUGHT),
        "tool_calls": {"type": "array", "items": one_of(variants),
                       "minItems": 1, "maxItems": max_calls}},
        "required": ["thought", "tool_calls"], "additionalProperties": False}


def describe_tools(tools: list[dict[str, Any]], known: frozenset[str] = frozenset()) -> str:
    """One line per tool: name, first line of the description, argument names and types.

    Tools in `known` (those a tool-use adapter was trained on) are only named, on the first line:
    the adapter learned what they do, and a short prompt is faster to read and to train on.
    """
    names = [t["function"]["name"] for t in tools if t["function"]["name"] in known]
    lines = [", ".join(names)] if names else []
    for t in tools:
        function = t["function"]
        if function["name"] == "final_answer" or function["name"] in known:
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

