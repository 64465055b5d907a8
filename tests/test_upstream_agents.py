"""Agents on an OpenAI-compatible upstream (here: agentd's own server on loopback), with native
tool calling, and the same agent run end to end through a second server."""

from __future__ import annotations

import asyncio

import httpx

from agentd.config import Settings
from agentd.llm.chat_model import step_schema
from agentd.llm.upstream_chat import UpstreamChatModel
from agentd.server.app import create_app
from pipelines.registry import ModelRegistry, ModelSpec
from tests.conftest import MODEL, RunningServer
from tools.builtin.calculator import calculator

FINAL = {"type": "function", "function": {"name": "final_answer", "description": "Answer.", "parameters": {
    "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}


def test_native_tool_calls_and_structured_output(server):
    llm = UpstreamChatModel(f"{server.url}/v1", MODEL)

    async def ask():
        reply = await llm.act([{"role": "user", "content": "What is 17 * 23?"}],
                              [calculator.definition(), FINAL], max_calls=1)
        plan = await llm.structured([{"role": "user", "content": "Name a colour."}],
                                    {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 20}},
                                     "required": ["colour"]}, max_tokens=40)
        return reply, plan

    reply, plan = asyncio.run(ask())
    assert reply.error is None and len(reply.tool_calls) == 1
    assert reply.tool_calls[0].name in ("calculator", "final_answer")
    schema = step_schema([calculator.definition(), FINAL], 1)["properties"]["tool_calls"]["items"]
    import jsonschema

    jsonschema.validate({"name": reply.tool_calls[0].name, "arguments": reply.tool_calls[0].arguments}, schema)
    assert isinstance(plan["colour"], str)


def test_an_agent_thinking_with_an_upstream_model(server, tmp_path):
    upstream = ModelRegistry([ModelSpec(id="upstream-smollm", kind="upstream", location=f"{server.url}/v1",
                                        upstream_model=MODEL)], tmp_path)
    asyncio.run(upstream.load_all())
    running = RunningServer(create_app(Settings(data_dir=tmp_path, agent_model="upstream-smollm",
                                                agent_max_steps=2), upstream))
    try:
        reply = running.client().chat.completions.create(
            model="agentd-react", messages=[{"role": "user", "content": "What is 17 * 23?"}])
        steps = reply.choices[0].message.model_extra["agent_steps"]
        assert steps[-1]["type"] == "final_answer"
        run = httpx.get(f"{running.url}/v1/runs/{reply.model_extra['run_id']}").json()
        assert run["model"] == "upstream-smollm" and run["status"] == "completed"
    finally:
        running.stop()
        asyncio.run(upstream.close())
