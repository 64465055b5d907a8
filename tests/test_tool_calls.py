from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from agentd.llm.tool_calls import (
    TOOL_CALL_START,
    ArgumentsPiece,
    CallStart,
    ContentPiece,
    ToolCallParser,
    plan_tool_calls,
)
from tools import tool

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def run(parser: ToolCallParser, pieces: list[str]):
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.finish()


def chars(text: str) -> list[str]:
    return list(text)


@pytest.mark.parametrize("split", [chars, lambda t: [t], lambda t: [t[:7], t[7:30], t[30:]]])
def test_auto_mode_separates_words_and_calls_however_the_text_is_split(split):
    text = (
        'Let me check. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
        '</tool_call><tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    )
    parser = ToolCallParser(forced=False)
    events = run(parser, split(text))
    content = "".join(e.text for e in events if isinstance(e, ContentPiece))
    starts = [e for e in events if isinstance(e, CallStart)]
    args = ["".join(e.text for e in events if isinstance(e, ArgumentsPiece) and e.index == i) for i in (0, 1)]
    assert content == "Let me check. "
    assert [s.name for s in starts] == ["get_weather", "get_weather"]
    assert [json.loads(a) for a in args] == [{"city": "Paris"}, {"city": "Rome"}]
    assert args == ['{"city": "Paris"}', '{"city": "Rome"}']  # as OpenAI sends them: no leading space
    assert [c["arguments"] for c in parser.calls] == args
    assert starts[0].id != starts[1].id and starts[0].id.startswith("call_")


def test_forced_mode_reads_one_call_object():
    parser = ToolCallParser(forced=True)
    events = run(parser, chars('{"name": "get_weather", "arguments": {"city": {"nested": 1}}}'))
    assert isinstance(events[0], CallStart)
    assert json.loads(parser.calls[0]["arguments"]) == {"city": {"nested": 1}}


def test_text_that_only_resembles_the_tag_is_content():
    parser = ToolCallParser(forced=False)
    events = run(parser, chars("a <tool is not <tool_cal a call"))
    assert "".join(e.text for e in events) == "a <tool is not <tool_cal a call"
    assert parser.calls == []


def test_plans():
    assert plan_tool_calls([WEATHER], "none", True).constraint is None
    auto = plan_tool_calls([WEATHER], "auto", False)
    assert auto.constraint.kind == "tagged_json" and auto.constraint.stop_after_first
    assert "get_weather" in auto.prompt and not auto.forced
    named = plan_tool_calls([WEATHER, {**WEATHER, "name": "other"}], {"name": "other"}, True)
    assert named.forced and named.constraint.schema["properties"]["name"] == {"const": "other"}
    required = plan_tool_calls([WEATHER, {**WEATHER, "name": "other"}], "required", True)
    assert len(required.constraint.schema["anyOf"]) == 2


CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


@pytest.mark.parametrize("forced", [True, False])
@pytest.mark.parametrize("cut_at", range(1, len(CALL)))
def test_a_cut_call_never_becomes_content_and_keeps_what_its_arguments_had(forced, cut_at):
    text = CALL[len(TOOL_CALL_START):] if forced else "Sure. " + CALL
    cut_at = min(cut_at, len(text) - 1)
    parser = ToolCallParser(forced=forced)
    events = parser.feed(text[:cut_at]) + parser.finish(cut=True)
    content = "".join(e.text for e in events if isinstance(e, ContentPiece))
    arguments = "".join(e.text for e in events if isinstance(e, ArgumentsPiece))
    assert content == ("" if forced else "Sure. "[:cut_at])
    assert '{"city": "Paris"}'.startswith(arguments.lstrip())
    assert [c["arguments"] for c in parser.calls] == ([arguments] if parser.calls else [])


def test_uncut_output_that_is_not_a_call_is_still_content():
    parser = ToolCallParser(forced=True)
    assert [e.text for e in run(parser, ["I cannot call that."])] == ["I cannot call that."]


class Box(BaseModel):
    x: int
    y: int


class Node(BaseModel):
    name: str
    children: list[Node] = []


@tool
def mark(boxes: list[Box], tree: Node | None = None) -> str:
    """Mark boxes.

    Args:
        boxes: where.
        tree: a tree of names.
    """
    return "ok"


def test_nested_models_in_tool_arguments_still_constrain_once_nested_in_a_step():
    """pydantic writes nested models as `$ref: #/$defs/…`; nested in a step or call schema, `#/`
    would name the outer schema, and xgrammar refused it ("Cannot find field $defs")."""
    import jsonschema
    import xgrammar

    from agentd.llm.chat_model import step_schema

    definition = mark.definition()
    assert "$defs" in definition["function"]["parameters"]
    step = step_schema([definition], max_calls=1)
    assert "$ref" not in json.dumps(step) and "$defs" not in json.dumps(step)
    xgrammar.Grammar.from_json_schema(json.dumps(step))
    good = {"thought": "", "tool_calls": [{"name": "mark", "arguments": {
        "boxes": [{"x": 1, "y": 2}], "tree": {"name": "a", "children": [{"name": "b"}]}}}]}
    jsonschema.validate(good, step)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "tool_calls": [{"name": "mark", "arguments": {"boxes": [{"x": "one"}]}}]}, step)
    call = plan_tool_calls([{"name": "mark", "parameters": definition["function"]["parameters"]}], "required", False)
    xgrammar.Grammar.from_json_schema(json.dumps(call.constraint.schema))


def test_inlining_leaves_what_it_cannot_resolve_for_the_compiler_to_refuse():
    from agentd.llm.tool_calls import inline_refs

    missing = {"type": "object", "properties": {"a": {"$ref": "#/$defs/Gone"}}}
    assert inline_refs(missing) == missing
    malformed = {"$defs": ["not", "a", "map"], "properties": {"a": {"$ref": "#/$defs/X"}}}
    assert inline_refs(malformed)["properties"]["a"] == {"$ref": "#/$defs/X"}
