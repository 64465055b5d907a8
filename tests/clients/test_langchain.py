"""LangChain's ChatOpenAI against agentd: invoke, stream, batch, forced tools, structured output.

The 135M model's answers are often wrong; what is checked is the protocol: a finished call
parses against its schema, and one cut by the token limit says `length`.
"""

from __future__ import annotations

import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.conftest import MODEL

QUESTION = "What is the weather in Paris?"


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(max_length=12, description="the person's name")
    age: int = Field(ge=0, le=150, description="the person's age")


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: the city's name.
    """
    return f"sunny in {city}"


def chat(server, max_tokens: int, **options) -> ChatOpenAI:
    return ChatOpenAI(base_url=f"{server.url}/v1", api_key="unused", model=MODEL, temperature=0,
                      max_completion_tokens=max_tokens, max_retries=0, timeout=120, **options)


@pytest.fixture(scope="module")
def llm(server) -> ChatOpenAI:
    """Enough tokens for a whole call or object; free text is cut short, which is all these tests need."""
    return chat(server, 64)


def test_invoke(server):
    reply = chat(server, 12).invoke("Say hello.")
    assert isinstance(reply.content, str) and reply.content
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    assert reply.usage_metadata["input_tokens"] > 0 and reply.usage_metadata["output_tokens"] > 0


def test_stream_with_usage(server):
    chunks = list(chat(server, 12).stream("Count to five.", stream_usage=True))
    assert len(chunks) > 2
    whole = sum(chunks[1:], chunks[0])
    assert whole.content and whole.usage_metadata["output_tokens"] > 0
    assert whole.response_metadata["finish_reason"] in ("stop", "length")


def test_batch(server):
    replies = chat(server, 8).batch(["Say hello.", "Name a colour."])
    assert len(replies) == 2 and all(isinstance(reply.content, str) and reply.content for reply in replies)


def test_bind_tools_with_a_forced_tool(llm):
    reply = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(QUESTION)
    (call,) = reply.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert get_weather.invoke(call["args"]).startswith("sunny in")


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output(llm, method):
    structured = llm.with_structured_output(Person, method=method, include_raw=True)
    result = structured.invoke("Bob is 41 years old. Who is mentioned?")
    finish = result["raw"].response_metadata["finish_reason"]
    assert finish in ("stop", "tool_calls"), finish
    assert isinstance(result["parsed"], Person), result["parsing_error"]


@pytest.mark.parametrize("limit, stream", [(8, False), (8, True), (24, False)])
def test_a_call_cut_by_the_token_limit_says_length(server, limit, stream):
    """Defect 1 of issue 18: a cut call was reported as finished and parsed to None."""
    structured = chat(server, limit, streaming=stream).with_structured_output(
        Person, method="function_calling", include_raw=True)
    result = structured.invoke("Bob is 41 years old. Who is mentioned?")
    finish = result["raw"].response_metadata["finish_reason"]
    assert "{" not in result["raw"].content  # the grammar's raw JSON never leaks into the text
    if limit == 8:  # too few tokens for any call
        assert finish == "length"
    if finish == "length":
        assert result["parsed"] is None
    else:
        assert finish == "tool_calls" and isinstance(result["parsed"], Person)
