"""pydantic-ai with its OpenAI chat model against agentd: a structured output_type run."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.conftest import MODEL


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=150)


async def test_a_structured_output_run(server):
    model = OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=f"{server.url}/v1", api_key="unused"))
    agent = Agent(model, output_type=Person, instructions="Extract the person.")
    result = await agent.run("Bob is 41 years old.", model_settings={"max_tokens": 64, "temperature": 0})
    assert isinstance(result.output, Person)
