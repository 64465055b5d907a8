"""OpenAI's Responses API with the official client: plain models (text, function tools, json_schema,
continuation, storage) and agents (steps as reasoning and server-side tool-call items)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import MODEL

WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_a_plain_response_is_text_with_usage_and_can_be_read_back(client):
    response = client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=12, temperature=0)
    assert response.status in ("completed", "incomplete")
    assert response.output[0].type == "message" and response.output_text
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 12
    again = client.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.status == response.status


def test_the_token_limit_makes_an_incomplete_response(client):
    response = client.responses.create(model=MODEL, input="Write a long story about a ship.", max_output_tokens=5,
                                       temperature=0)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 5


def test_a_streamed_response_sends_its_events_in_order(client):
    with client.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=12, temperature=0) as stream:
        events = list(stream)
    final = events[-1].response  # the client's get_final_response() takes only `response.completed`
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == final.output_text
    assert kinds.index("response.output_item.added") < kinds.index("response.output_text.delta") \
        < kinds.index("response.output_text.done") < kinds.index("response.output_item.done")
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_a_required_function_tool_is_called_and_its_output_continues_the_response(client):
    first = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=64, temperature=0)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)
    second = client.responses.create(
        model=MODEL, previous_response_id=first.id, max_output_tokens=24, temperature=0, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 25 degrees"}])
    assert second.output[0].type == "message" and second.output_text
    assert second.previous_response_id == first.id
    listed = client.responses.input_items.list(second.id, order="asc")
    assert [item.type for item in listed.data] == ["message", "function_call", "function_call_output"]


def test_a_streamed_function_call_streams_its_arguments(client):
    with client.responses.stream(model=MODEL, input="Weather in Rome?", tools=[WEATHER],
                                 tool_choice={"type": "function", "name": "get_weather"},
                                 max_output_tokens=64, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments and json.loads(call.arguments)["city"]


def test_json_schema_text_format_gives_json_of_that_schema(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    response = client.responses.create(
        model=MODEL, input="Bob is 41 years old. Give him as JSON.", max_output_tokens=48, temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}})
    person = json.loads(response.output_text)
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)


def test_instructions_and_a_continued_conversation_reach_the_model(client):
    first = client.responses.create(model=MODEL, input="My name is Ada.", instructions="Answer in one sentence.",
                                    max_output_tokens=16, temperature=0)
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input="What is my name?",
                                     max_output_tokens=16, temperature=0)
    items = client.responses.input_items.list(second.id, order="asc").data
    texts = [part.text for item in items for part in item.content]
    assert texts[0] == "My name is Ada." and texts[-1] == "What is my name?"
    assert first.output_text in texts  # the first answer is part of the continued conversation
    # The model saw that conversation (and not the first response's instructions, which do not carry over):
    # the same chat completion reads as many prompt tokens and answers the same words.
    chat = client.chat.completions.create(model=MODEL, max_tokens=16, temperature=0, messages=[
        {"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"}])
    assert chat.usage.prompt_tokens == second.usage.input_tokens
    assert chat.choices[0].message.content == second.output_text


def test_an_unstored_response_is_not_kept_and_a_deleted_one_is_gone(client):
    unstored = client.responses.create(model=MODEL, input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as error:
        client.responses.create(model=MODEL, input="Hi", previous_response_id=unstored.id)
    assert error.value.body["param"] == "previous_response_id"
    stored = client.responses.create(model=MODEL, input="Hi", max_output_tokens=2)
    client.responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(stored.id)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "computer_call_output", "call_id": "x"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
    ({"input": "Hi", "background": True}, "background"),
    ({"input": "Hi", "temperature": 3}, "temperature"),
    ({"input": "Hi", "tool_choice": "required"}, "tool_choice"),
    ({"input": []}, "input"),
    ({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}}},
     "text.format"),
])
def test_what_cannot_be_served_is_a_clear_400(http, body, param):
    reply = http.post("/v1/responses", json={"model": MODEL, **body})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


def test_an_agent_refuses_client_tools_and_formats_with_this_apis_names(http):
    for body, param in (({"tools": [WEATHER]}, "tools"), ({"text": {"format": {"type": "json_object"}}}, "text.format")):
        reply = http.post("/v1/responses", json={"model": "agentd-react", "input": "Hi", **body})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text


def test_an_unknown_model_and_an_unknown_response_are_404s(http):
    assert http.post("/v1/responses", json={"model": "nope", "input": "Hi"}).status_code == 404
    for reply in (http.get("/v1/responses/resp_nope"), http.delete("/v1/responses/resp_nope"),
                  http.get("/v1/responses/resp_nope/input_items")):
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "response_not_found"


def test_an_agent_streams_its_steps_as_reasoning_and_server_tool_calls(client):
    with client.responses.stream(model="agentd-react", input="What is 4821 times 377? Use the calculator.",
                                 tool_choice={"type": "function", "name": "calculator"}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [item.type for item in final.output]
    assert "reasoning" in kinds and "mcp_call" in kinds and kinds.count("message") == 1
    assert kinds.index("reasoning") < kinds.index("mcp_call") < kinds.index("message")
    call = next(item for item in final.output if item.type == "mcp_call")
    assert call.name == "calculator" and call.status == "completed" and "1817517" in call.output.replace(",", "")
    assert final.status == "completed" and final.output_text
    assert any(e.type == "response.mcp_call.completed" for e in events)
    assert not any(item.type == "function_call" for item in final.output)  # the client must not run it
    stored = client.responses.retrieve(final.id)
    assert [item.type for item in stored.output] == kinds


def test_an_agent_response_continues_its_thread(client, http):
    first = client.responses.create(model="agentd-react", input="Say hi.", tool_choice="none")
    second = client.responses.create(model="agentd-react", previous_response_id=first.id, input="Say bye.",
                                     tool_choice="none")
    threads = {http.get(f"/v1/responses/{r.id}").json()["thread_id"] for r in (first, second)}
    assert len(threads) == 1 and second.output_text


def test_a_stream_ends_without_done_marker_and_with_event_names(server):
    # Responses streams name each event (`event:` lines) and end with the last event, as OpenAI's do.
    with httpx.stream("POST", f"{server.url}/v1/responses", timeout=60,
                      json={"model": MODEL, "input": "Hi", "max_output_tokens": 3, "stream": True}) as reply:
        lines = [line for line in reply.iter_lines() if line]
    assert lines[0] == "event: response.created"
    assert not any("[DONE]" in line for line in lines)
    assert json.loads(lines[-1].removeprefix("data: "))["type"] in ("response.completed", "response.incomplete")


def test_a_client_leaving_mid_stream_cancels_the_response_and_frees_the_engine(server, http, engine):
    with httpx.stream("POST", f"{server.url}/v1/responses", timeout=60,
                      json={"model": MODEL, "input": "Write a long story.", "max_output_tokens": 400,
                            "stream": True}) as reply:
        events = []
        for line in reply.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                if events[-1]["type"] == "response.output_text.delta" and len(events) > 8:
                    break
    response_id = events[0]["response"]["id"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stored = http.get(f"/v1/responses/{response_id}").json()
        if stored["status"] != "in_progress" and engine.active_sequences == 0:
            break
        time.sleep(0.1)
    assert stored["status"] == "cancelled" and engine.active_sequences == 0
    assert stored["output"][0]["content"][0]["text"]  # what was made before the client left is kept
