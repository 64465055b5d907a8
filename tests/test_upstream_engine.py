"""An OpenAI-compatible upstream served as a model: here, a second agentd in front of the first."""

import asyncio
import json

import jsonschema
import openai
import pytest
from typer.testing import CliRunner

from agentd.cli import app
from pipelines.registry import ModelRegistry, parse_model_spec
from tests.conftest import DATA_DIR, MODEL, start_server


def test_proxying_an_upstream(server):
    proxy_registry = ModelRegistry([parse_model_spec(f"far={server.url}/v1#{MODEL}")], DATA_DIR)
    asyncio.run(proxy_registry.load_all())
    proxy = start_server(proxy_registry)
    try:
        client = proxy.client()
        question = [{"role": "user", "content": "What is the capital of France?"}]
        direct = server.client().chat.completions.create(model=MODEL, messages=question, max_tokens=12, temperature=0)
        relayed = client.chat.completions.create(model="far", messages=question, max_tokens=12, temperature=0)
        assert relayed.choices[0].message.content == direct.choices[0].message.content
        assert relayed.usage.completion_tokens == direct.usage.completion_tokens
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="far", messages=question, max_tokens=12, temperature=0, stream=True))
        assert streamed == direct.choices[0].message.content
        schema = {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 20}}, "required": ["zone"]}
        called = client.chat.completions.create(
            model="far", messages=question, max_tokens=60, temperature=0,
            tools=[{"type": "function", "function": {"name": "get_time", "parameters": schema}}],
            tool_choice="required")
        call = called.choices[0].message.tool_calls[0]
        assert call.function.name == "get_time"
        jsonschema.validate(json.loads(call.function.arguments), schema)
        text = client.completions.create(model="far", prompt="One, two,", max_tokens=4, temperature=0)
        assert text.choices[0].text
    finally:
        proxy.stop()
        asyncio.run(proxy_registry.close())


def test_an_unreachable_upstream_is_a_clear_error(registry):
    dead = ModelRegistry([parse_model_spec("dead=http://127.0.0.1:9/v1")], DATA_DIR)
    asyncio.run(dead.load_all())
    proxy = start_server(dead)
    try:
        with pytest.raises(openai.APIStatusError) as error:
            proxy.client().chat.completions.create(model="dead", messages=[{"role": "user", "content": "x"}])
        assert error.value.status_code == 502 and "127.0.0.1:9" in error.value.body["message"]
    finally:
        proxy.stop()
        asyncio.run(dead.close())


@pytest.fixture(scope="module")
def keyed(registry):
    running = start_server(registry, api_keys=["sesame"])
    yield running
    running.stop()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("refusal, says", [("unknown_model", "answered 404"), ("missing_key", "refused our key (401)")])
def test_an_upstream_refusing_our_server_is_a_bad_gateway_not_the_clients_fault(server, keyed, refusal, says, stream):
    """The upstream's 401 (our server's key) or 404 (our configured upstream model) is not about
    the client's key or model: a client told 401 or 404 would look for the fault in the wrong place."""
    upstream = f"{server.url}/v1#no-such-model" if refusal == "unknown_model" else f"{keyed.url}/v1#{MODEL}"
    proxy_registry = ModelRegistry([parse_model_spec(f"far={upstream}")], DATA_DIR)
    asyncio.run(proxy_registry.load_all())
    proxy = start_server(proxy_registry)
    try:
        with pytest.raises(openai.APIError) as refused:
            reply = proxy.client().chat.completions.create(
                model="far", messages=[{"role": "user", "content": "x"}], max_tokens=4, stream=stream)
            if stream:
                list(reply)
        error = refused.value
        assert not isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError))
        if isinstance(error, openai.APIStatusError) or not stream:
            assert error.status_code == 502
        # Streamed, the error may come as an event after the 200: it carries its code all the same.
        assert error.code == "upstream_error" and error.body["type"] == "server_error"
        assert upstream.split("#")[0] in error.message and says in error.message
    finally:
        proxy.stop()
        asyncio.run(proxy_registry.close())


def test_an_upstream_verdict_on_the_clients_request_is_passed_on(server):
    proxy_registry = ModelRegistry([parse_model_spec(f"far={server.url}/v1#{MODEL}")], DATA_DIR)
    asyncio.run(proxy_registry.load_all())
    proxy = start_server(proxy_registry)
    try:
        with pytest.raises(openai.BadRequestError) as refused:  # only the upstream knows its context length
            proxy.client().chat.completions.create(model="far", messages=[{"role": "user", "content": "x"}],
                                                   max_tokens=10**6)
        assert f"the upstream {server.url}/v1 answered 400" in refused.value.message
        assert "maximum context length" in refused.value.message and refused.value.param == "messages"
    finally:
        proxy.stop()
        asyncio.run(proxy_registry.close())


@pytest.mark.parametrize("keys, named", [(["near=sekrit"], "'near'"), (["sekrit"], "#1"), (["far=a", "=sekrit"], "#2")])
def test_a_bad_upstream_key_is_a_startup_error_that_names_the_model_not_the_key(tmp_path, keys, named):
    flags = [flag for key in keys for flag in ("--upstream-api-key", key)]
    result = CliRunner().invoke(app, ["serve", "--model", "far=http://127.0.0.1:9/v1", "--data-dir", str(tmp_path),
                                      *flags])
    assert result.exit_code == 2 and named in result.output and "sekrit" not in result.output
    env = {"AGENTD_MODELS": "far=http://127.0.0.1:9/v1", "AGENTD_UPSTREAM_API_KEYS": ",".join(keys)}
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path)], env=env)
    assert result.exit_code == 2 and named in result.output and "sekrit" not in result.output
