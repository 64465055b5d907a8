"""Chat completions through the official openai client against a real server on loopback."""

import asyncio
import json
import time

import jsonschema
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentd.server.errors import APIError
from agentd.server.generation import RequestRecord, recorded
from agentd.server.metrics import ServerMetrics
from pipelines.engine import EngineError
from tests.conftest import MODEL

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_lists_the_embedded_model(client):
    assert MODEL in [m.id for m in client.models.list()]


def test_non_streaming_chat(client):
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=20, temperature=0)
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert reply.usage.prompt_tokens > 5 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_chunks_follow_the_openai_wire_format(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    *body, usage_chunk = chunks
    assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens > 0
    assert all(c.usage is None for c in body)
    first = body[0].choices[0].delta
    assert first.role == "assistant" and first.content
    assert all(c.choices[0].delta.role is None for c in body[1:])
    finishes = [c.choices[0].finish_reason for c in body if c.choices[0].finish_reason]
    assert finishes == ["stop"]
    text = "".join(c.choices[0].delta.content or "" for c in body)
    assert "Paris" in text and usage_chunk.usage.completion_tokens >= len(body) - 2


def test_stream_ends_with_done(http):
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 3, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][5:])["choices"][0]["finish_reason"] == "length"


def test_max_tokens_gives_length(client):
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_completion_tokens=3)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3


def test_stop_string_ends_output_before_it(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=20, temperature=0, stop=["Paris"]
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content.startswith("The capital of France is")
    assert "Paris" not in reply.choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=20, temperature=0, stop=["Paris"], stream=True)
    )
    assert streamed == reply.choices[0].message.content


def test_n_choices_and_seeds(client):
    ask = dict(model=MODEL, messages=[{"role": "user", "content": "Write a word."}], max_tokens=8,
               temperature=1.0, seed=11, n=3)
    first = client.chat.completions.create(**ask)
    again = client.chat.completions.create(**ask)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    chunks = list(client.chat.completions.create(**ask, stream=True))
    for index in range(3):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant"
        assert len([c for c in mine if c.finish_reason]) == 1
        assert "".join(c.delta.content or "" for c in mine) == first.choices[index].message.content


def test_json_schema_output_validates(client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20},
                       "country": {"type": "string", "maxLength": 20}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    assert reply.choices[0].finish_reason == "stop"


def test_json_object_output_parses(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Repeat exactly this JSON: {\"name\": \"Ada\"}"}],
        max_tokens=300, temperature=0, response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_content_parts_and_developer_role_mean_the_same_as_their_plain_forms(client):
    def answer(messages):
        reply = client.chat.completions.create(model=MODEL, max_tokens=12, temperature=0, messages=messages)
        return reply.choices[0].message.content

    parts = [{"type": "text", "text": "What is the capital "}, {"type": "text", "text": "of France?"}]
    assert answer([{"role": "user", "content": parts}]) == answer(QUESTION)
    assert answer([{"role": "developer", "content": "Be brief."}] + QUESTION) == answer(
        [{"role": "system", "content": "Be brief."}] + QUESTION
    )


UNCOMPILABLE = [
    {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}},  # a lookbehind
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
]


def in_flight(http, endpoint="chat") -> float:
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "agentd_requests_in_flight" and sample.labels["endpoint"] == endpoint:
                return sample.value
    return 0.0


@pytest.mark.parametrize("schema", UNCOMPILABLE)
@pytest.mark.parametrize("stream", [False, True])
def test_a_schema_the_grammar_cannot_enforce_is_a_400_naming_its_field(client, http, schema, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=5, stream=stream,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
    assert caught.value.param == "response_format" and caught.value.type == "invalid_request_error"
    assert "cannot be enforced" in caught.value.message and "/project/" not in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=5, stream=stream, tool_choice="required",
            tools=[{"type": "function", "function": {"name": "f", "parameters": schema}}],
        )
    assert caught.value.param == "tools"
    assert in_flight(http) == 0


def test_a_client_leaving_a_stream_leaves_the_in_flight_gauge(http):
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 200, "stream": True}
    for _ in range(3):
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            while not next(lines).startswith("data:"):
                pass
    for _ in range(100):
        if in_flight(http) == 0:
            return
        time.sleep(0.05)
    assert in_flight(http) == 0


@pytest.mark.parametrize(("failure", "status"), [(RuntimeError("boom"), "500"), (asyncio.CancelledError(), "499"),
                                                 (EngineError("bad", status=400), "400")])
def test_a_request_ended_by_any_exception_is_recorded_once(failure, status):
    metrics = ServerMetrics()
    record = RequestRecord(metrics, "chat", MODEL)

    async def fails():
        raise failure

    with pytest.raises((type(failure), APIError)):
        asyncio.run(recorded(record, fails()))
    record.done(200)  # a later report (a stream's own) does not count twice
    assert metrics.registry.get_sample_value("agentd_requests_in_flight", {"endpoint": "chat"}) == 0
    assert metrics.registry.get_sample_value(
        "agentd_requests_total", {"endpoint": "chat", "model": MODEL, "status": status}) == 1
