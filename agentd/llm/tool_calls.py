"""Client-side tool calling: the prompt and constraint that make a model call, and the parser
that turns its output into OpenAI tool-call deltas as it streams.

A call is written `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes
convention most open chat models were trained on). With `tool_choice` required or named the
whole output is forced to be one call object; with `auto` the model may write words, and
whatever follows `<tool_call>` is forced to be a valid call.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pipelines.engine import Constraint

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
# The lookahead holds the header back until the arguments' first character has arrived, so
# the space a model writes after the colon never becomes part of the arguments string.
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\S)')


@dataclass
class ToolCallPlan:
    prompt: str | None
    constraint: Constraint | None
    forced: bool  # the whole output is one call object


def plan_tool_calls(
    tools: list[dict[str, Any]], choice: str | dict[str, Any] | None, parallel: bool
) -> ToolCallPlan:
    """`tools` are OpenAI function definitions; `choice` is none/auto/required or a name dict."""
    if not tools or choice == "none":
        return ToolCallPlan(prompt=None, constraint=None, forced=False)
    if isinstance(choice, dict):
        tools = [t for t in tools if t["name"] == choice["name"]]
    listing = "\n".join(json.dumps(_describe(t)) for t in tools)
    template = resources.files("agentd.llm").joinpath("prompts/tool_calling.txt").read_text()
    prompt = template.format(functions=listing)
    schema = _call_schema(tools)
    if choice in (None, "auto"):
        constraint = Constraint(
            kind="tagged_json",
            schema=schema,
            trigger=TOOL_CALL_START,
            end=TOOL_CALL_END,
            stop_after_first=not parallel,
        )
        return ToolCallPlan(prompt=prompt, constraint=constraint, forced=False)
    return ToolCallPlan(prompt=prompt, constraint=Constraint("json_schema", schema), forced=True)


def _describe(tool: dict[str, Any]) -> dict[str, Any]:
    described = {"name": tool["name"], "parameters": tool["parameters"]}
    if tool.get("description"):
        described["description"] = tool["description"]
    return described


def inline_refs(schema: Any) -> Any:
    """A copy of a JSON schema with its local `$ref`s (`#/$defs/X`, as pydantic writes nested
    models) replaced by what they name: once a tool's parameters sit inside a bigger schema (a
    step, a plan, a call), `#/` would point at that bigger schema's root. A recursive reference
    is left unconstrained at the point where it recurs."""
    if not isinstance(schema, dict):
        return schema
    definitions = {name: value for key in ("definitions", "$defs") if isinstance(schema.get(key), dict)
                   for name, value in schema[key].items()}

    def resolve(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith(("#/$defs/", "#/definitions/")):
            name = reference.rsplit("/", 1)[1]
            if name not in definitions:
                return node  # left for the grammar compiler to refuse: a 400 naming the schema
            if name in seen:
                return {key: resolve(value, seen) for key, value in node.items() if key != "$ref"}
            target = resolve(definitions[name], (*seen, name))
            rest = {key: resolve(value, seen) for key, value in node.items() if key != "$ref"}
            return {**target, **rest}
        return {key: resolve(value, seen) for key, value in node.items() if key not in ("$defs", "definitions")}

    return resolve(schema, ())


def _call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": t["name"]}, "arguments": inline_refs(t["parameters"])},
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    return one_of(variants)


def one_of(choices: list[dict[str, Any]]) -> dict[str, Any]:
    """A schema for a value valid against one of `choices` (the choice itself when there is one)."""
    return choices[0] if len(choices) == 1 else {"anyOf": choices}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ContentPiece:
    text: str


@dataclass
class CallStart:
    index: int
    id: str
    name: str


@dataclass
class ArgumentsPiece:
    index: int
    text: str


Event = ContentPiece | CallStart | ArgumentsPiece


class ToolCallParser:
    """Incremental: feed text as it arrives, get content and tool-call events back.

    The arguments of a call stream as raw fragments whose concatenation is exactly the
    arguments JSON; the closing brace of the call object and the end tag are held back.
    """

    def __init__(self, forced: bool):
        self._forced = forced
        self._buffer = ""
        self._in_call = forced
        self._args_start: int | None = None
        self._args_sent = 0
        self.calls: list[dict[str, str]] = []

    def feed(self, text: str) -> list[Event]:
        self._buffer += text
        events: list[Event] = []
        while True:
            progressed = self._step(events)
            if not progressed:
                return events

    def finish(self, cut: bool = False) -> list[Event]:
        """Flush what was held back. `cut`: the output was cut off by the token limit, so an
        open call is unfinished: the arguments it had so far stay, but no half-written call
        (nor a half-written `<tool_call>` tag) turns into content."""
        events = self.feed("")
        if cut:
            if self._in_call and self._args_start is not None:
                self._send_arguments(self._arguments_end(), events)
            self._buffer, self._in_call, self._args_start = "", False, None
            return events
        if self._in_call and self._buffer.strip():
            self._close_call(self._buffer, events)
        elif not self._in_call and self._buffer:
            events.append(ContentPiece(self._buffer))
            self._buffer = ""
        return events

    def _step(self, events: list[Event]) -> bool:
        if not self._in_call:
            at = self._buffer.find(TOOL_CALL_START)
            if at < 0:
                keep = _partial_suffix(self._buffer, TOOL_CALL_START)
                if len(self._buffer) > keep:
                    events.append(ContentPiece(self._buffer[: len(self._buffer) - keep]))
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                return False
            if at > 0 and self._buffer[:at].strip():
                events.append(ContentPiece(self._buffer[:at]))
            self._buffer = self._buffer[at + len(TOOL_CALL_START) :]
            self._in_call = True
            return True
        if self._args_start is None:
            header = _HEADER.match(self._buffer)
            if not header:
                return False
            name = json.loads(f'"{header.group(1)}"')
            self.calls.append({"id": new_call_id(), "name": name, "arguments": ""})
            events.append(CallStart(len(self.calls) - 1, self.calls[-1]["id"], name))
            self._args_start = header.end()
            self._args_sent = self._args_start
        end = -1 if self._forced else self._buffer.find(TOOL_CALL_END)
        if end >= 0:
            body = self._buffer[:end]
            self._buffer = self._buffer[end + len(TOOL_CALL_END) :]
            self._close_call(body, events)
            return True
        safe = len(self._buffer) - _closing_suffix(self._buffer)
        self._send_arguments(safe, events)
        return False

    def _arguments_end(self) -> int:
        """Where the open call's arguments end: after their JSON value if it is complete,
        else at the end of what was written (the closing brace of the call and the end tag
        were never written, or follow the value)."""
        start = self._args_start or 0
        start += len(self._buffer[start:]) - len(self._buffer[start:].lstrip())
        try:
            return json.JSONDecoder().raw_decode(self._buffer, start)[1]
        except ValueError:
            return len(self._buffer)

    def _send_arguments(self, upto: int, events: list[Event]) -> None:
        if upto > self._args_sent:
            piece = self._buffer[self._args_sent : upto]
            self.calls[-1]["arguments"] += piece
            events.append(ArgumentsPiece(len(self.calls) - 1, piece))
            self._args_sent = upto

    def _close_call(self, body: str, events: list[Event]) -> None:
        if self._args_start is not None:
            last_brace = body.rstrip().rfind("}")
            saved, self._buffer = self._buffer, body
            self._send_arguments(max(last_brace, self._args_sent), events)
            self._buffer = saved
        elif body.strip():
            # Not a call after all (an unconstrained upstream wrote something else): keep it.
            events.append(ContentPiece(body if self._forced else TOOL_CALL_START + body))
        self._in_call = False
        self._args_start = None
        if self._forced:
            self._buffer = ""


def _partial_suffix(text: str, tag: str) -> int:
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def _closing_suffix(text: str) -> int:
    """Length of a tail that may be the call object's closing brace and the end tag."""
    stripped = text[: len(text) - _partial_suffix(text, TOOL_CALL_END)].rstrip()
    if stripped.endswith("}"):
        stripped = stripped[:-1]
    return len(text) - len(stripped.rstrip()) if stripped != text else 0
