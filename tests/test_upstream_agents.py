"""Agents on an OpenAI-compatible upstream (here: agentd's own server on loopback), with native
tool calling, and the same agent run end to end through a second server that holds the
upstream's key."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import openai
import pytest

from agentd.config import Settings
from agentd.llm.chat_model import step_schema
from agentd.llm.models import chat_model_for
from agentd.server.app import create_app
from pipelines.openai_engine import OpenAIUpstreamEngine
from tests.conftest import MODEL, RunningServer, start_server
from tools.builtin.calculator import calculator

FINAL = {"type": "function", "function": {"name": "final_answer", "description": "Answer.", "parameters": {
    "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}


def test_native_tool_calls_and_structured_output(server):
    engine = OpenAIUpstreamEngine("far", f"{server.url}/v1", upstream_model=MODEL)
    llm = chat_model_for(engine, "far")

    async def ask():
        try:
            reply = await llm.act([{"role": "user", "content": "What is 17 * 23?"}],
                                  [calculator.definition(), FINAL], max_calls=1)
            plan = await llm.structured([{"role": "user", "content": "Name a colour."}],
                                        {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 20}},
                                         "required": ["colour"]}, max_tokens=40)
        finally:
            await engine.close()
        return reply, plan

    reply, plan = asyncio.run(ask())
    assert reply.error is None and len(reply.tool_calls) == 1
    assert reply.tool_calls[0].name in ("calculator", "final_answer")
    schema = step_schema([calculator.definition(), FINAL], 1)["properties"]["tool_calls"]["items"]
    import jsonschema

    jsonschema.validate({"name": reply.tool_calls[0].name, "arguments": reply.tool_calls[0].arguments}, schema)
    assert isinstance(plan["colour"], str)
    assert engine.client.is_closed()  # the chat model used the engine's client, which closing the engine closed


def wait_until_ready(running: RunningServer) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{running.url}/health").status_code != 200:
        assert time.monotonic() < deadline, "the upstream model never became ready"
        time.sleep(0.05)


def test_a_keyed_upstream_serves_chat_and_an_agents_brain(registry, tmp_path, caplog):
    """A second agentd that wants a key is the upstream. The key comes from the settings (as from
    --upstream-api-key) and reaches plain chat and the agent thinking with that model alike."""
    caplog.set_level(logging.DEBUG, logger="openai")
    caplog.set_level(logging.DEBUG, logger="httpx2")
    keyed = start_server(registry, api_keys=["sesame"])
    far = f"far={keyed.url}/v1#{MODEL}"
    question = [{"role": "user", "content": "What is the capital of France?"}]
    try:
        keyless = RunningServer(create_app(Settings(data_dir=tmp_path / "keyless", models=[far])))
        try:
            wait_until_ready(keyless)
            # The upstream refused our server's key, not the client's: a bad gateway, not a 401.
            with pytest.raises(openai.InternalServerError) as refused:
                keyless.client().chat.completions.create(model="far", messages=question, max_tokens=4)
            assert refused.value.status_code == 502
            assert f"the upstream {keyed.url}/v1 refused our key (401)" in refused.value.body["message"]
        finally:
            keyless.stop()

        settings = Settings(data_dir=tmp_path / "keyed", models=[far], upstream_api_keys=["far=sesame"],
                            agent_model="far", agent_max_steps=1, builtin_tools=False)
        running = RunningServer(create_app(settings))
        try:
            wait_until_ready(running)
            # A slow shared CPU can take minutes for an agent's steps on the 135M model.
            client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0, timeout=500)
            reply = client.chat.completions.create(model="far", messages=question, max_tokens=8, temperature=0)
            assert reply.choices[0].message.content
            agent = client.chat.completions.create(
                model="agentd-react", messages=[{"role": "user", "content": "What is 17 * 23?"}])
            assert agent.choices[0].message.model_extra["agent_steps"][-1]["type"] == "final_answer"
            run = httpx.get(f"{running.url}/v1/runs/{agent.model_extra['run_id']}").json()
            assert run["model"] == "far" and run["status"] == "completed"
            shown = [httpx.get(f"{running.url}{path}").text for path in ("/v1/models", "/health")]
            shown += [repr(settings), repr(running.app.state.registry.specs), settings.model_dump_json()]
            assert not [text for text in shown if "sesame" in text]
        finally:
            running.stop()
        # The app owned its registry, so shutdown closed the engine and the client the agent shared.
        assert running.app.state.registry.engines["far"].client.is_closed()
    finally:
        keyed.stop()
    assert "sesame" not in caplog.text
