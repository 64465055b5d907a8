"""The OpenAI Agents SDK against agentd, on its chat-completions model and on its default, the Responses
model: tools, typed output, streaming."""

from __future__ import annotations

import openai
import pytest
from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool,
                    set_tracing_disabled)
from openai.types.responses import ResponseTextDeltaEvent
from pydantic import BaseModel, Field

from tests.conftest import MODEL

set_tracing_disabled(True)  # the SDK would otherwise send traces to OpenAI


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=150)


@function_tool
def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: the city's name.
    """
    return f"sunny in {city}"


@pytest.fixture()
def client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(params=["chat_completions", "responses"])
def model(client, request):
    """The SDK's two model classes: on chat completions, and its default, on the Responses API."""
    if request.param == "responses":
        return OpenAIResponsesModel(model=MODEL, openai_client=client)
    return OpenAIChatCompletionsModel(model=MODEL, openai_client=client)


async def test_a_run_that_must_call_a_tool_returns_its_result(model):
    agent = Agent(name="weather", instructions="Answer with the weather tool.", model=model, tools=[get_weather],
                  model_settings=ModelSettings(tool_choice="get_weather", max_tokens=64, temperature=0),
                  tool_use_behavior="stop_on_first_tool")
    result = await Runner.run(agent, "What is the weather in Paris?")
    assert result.final_output.startswith("sunny in ")


async def test_a_run_with_a_pydantic_output_type(model):
    agent = Agent(name="extract", instructions="Extract the person.", model=model, output_type=Person,
                  model_settings=ModelSettings(max_tokens=64, temperature=0))
    result = await Runner.run(agent, "Bob is 41 years old.")
    assert isinstance(result.final_output, Person)


async def test_a_streamed_run(model):
    agent = Agent(name="chat", instructions="Be brief.", model=model,
                  model_settings=ModelSettings(max_tokens=24, temperature=0))
    streamed = Runner.run_streamed(agent, "Say hello.")
    deltas = [event.data.delta async for event in streamed.stream_events()
              if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent)]
    assert len(deltas) > 1 and streamed.final_output == "".join(deltas)


async def test_the_responses_model_feeds_a_tool_result_back_for_the_answer(client):
    # Two model calls: the forced tool call, then (the SDK resets tool_choice after a call) the answer
    # to the tool's output, sent back as a function_call_output item.
    agent = Agent(name="weather", instructions="Answer with the weather tool.",
                  model=OpenAIResponsesModel(model=MODEL, openai_client=client), tools=[get_weather],
                  model_settings=ModelSettings(tool_choice="required", max_tokens=32, temperature=0))
    result = await Runner.run(agent, "What is the weather in Paris?", max_turns=4)
    assert isinstance(result.final_output, str) and result.final_output
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and kinds[-1] == "message_output_item"
