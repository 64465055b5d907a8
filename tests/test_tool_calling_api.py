"""Client-side tool calling: constrained calls, streamed and not, and the round trip."""

import json

import jsonschema
import pytest

from tests.conftest import MODEL

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time in a time zone",
                 "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 30}},
                                "required": ["zone"]}},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}


def assert_valid_call(call):
    assert call.id.startswith("call_") and call.type == "function"
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_forced_tool_calls(client, choice):
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice=choice, max_tokens=80, temperature=0
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls" and message.content is None
    assert len(message.tool_calls) == 1
    assert_valid_call(message.tool_calls[0])
    if isinstance(choice, dict):
        assert message.tool_calls[0].function.name == "get_time"


def test_auto_tool_choice_gives_words_or_a_valid_call(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="auto", max_tokens=80, temperature=0
    )
    choice = reply.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            assert_valid_call(call)
    else:
        assert choice.finish_reason in ("stop", "length") and choice.message.content


def test_tool_choice_none_never_calls(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=10, temperature=0
    )
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content


def test_streamed_tool_call_deltas_and_the_sdk_stream_helper(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=80,
        temperature=0, stream=True,
    ))
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    head, *rest = deltas
    assert head.index == 0 and head.id.startswith("call_") and head.type == "function"
    assert head.function.name == "get_weather"
    assert rest and all(d.id is None and d.function.name is None and d.function.arguments for d in rest)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), SCHEMAS["get_weather"])

    pieces = []
    with client.chat.completions.stream(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=80, temperature=0,
    ) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                pieces.append(event.arguments_delta)
            elif event.type == "tool_calls.function.arguments.done":
                done = event
        final = stream.get_final_completion()
    assert done.name == "get_weather" and "".join(pieces) == done.arguments == arguments
    assert final.choices[0].message.tool_calls[0].function.arguments == arguments


def test_round_trip_with_a_tool_message(client):
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=80, temperature=0
    )
    call = first.choices[0].message.tool_calls[0]
    follow_up = ASK + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21, "sky": "sunny"}'},
    ]
    reply = client.chat.completions.create(
        model=MODEL, messages=follow_up, tools=[WEATHER], tool_choice="none", max_tokens=30, temperature=0
    )
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.choices[0].message.content


STRICT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": False},
    },
}


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
@pytest.mark.parametrize("max_tokens", [6, 10, 14, 16, 20])
def test_a_call_cut_off_by_the_token_limit_says_length(client, choice, max_tokens):
    ask = dict(model=MODEL, messages=ASK, tools=[STRICT_WEATHER], tool_choice=choice, max_tokens=max_tokens,
               temperature=0)
    reply = client.chat.completions.create(**ask)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "length"
    assert not message.content  # the half-written call never leaks into the words
    chunks = list(client.chat.completions.create(**ask, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)
    streamed = "".join(d.function.arguments or "" for c in chunks for d in c.choices[0].delta.tool_calls or [])
    # What the call had so far may stay (as OpenAI does), the same streamed or not.
    assert streamed == "".join(c.function.arguments for c in message.tool_calls or [])


def test_a_whole_call_within_the_limit_still_says_tool_calls(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[STRICT_WEATHER], tool_choice="required", max_tokens=40, temperature=0)
    assert reply.choices[0].finish_reason == "tool_calls"
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}
