"""Plain chat relayed as bytes to an upstream this server launched (as vLLM deployments are).

The upstream here is agentd's own session server on loopback; a second agentd serves the same
model id from it with `relay` set, so the answers must be the upstream's own, byte for byte in
content, with usage and metrics kept, and errors still in our shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentd.config import Settings
from agentd.server.app import create_app
from pipelines.registry import ModelRegistry, ModelSpec
from tests.conftest import DATA_DIR, MODEL, RunningServer

MESSAGES = [{"role": "user", "content": "Name three colours."}]


def relaying(url: str, tmp_path) -> RunningServer:
    registry = ModelRegistry([ModelSpec(id=MODEL, kind="upstream", location=url, upstream_model=MODEL, relay=True)],
                             DATA_DIR)
    asyncio.run(registry.load_all())
    return RunningServer(create_app(Settings(data_dir=tmp_path, builtin_tools=False), registry))


@pytest.fixture()
def relay(server, tmp_path) -> Iterator[RunningServer]:
    running = relaying(f"{server.url}/v1", tmp_path)
    yield running
    running.stop()


def completion_tokens(running: RunningServer) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{running.url}/metrics").text):
        if family.name == "agentd_completion_tokens":
            return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    return 0.0


def test_plain_and_streamed_chat_come_back_as_the_upstream_gave_them(server, relay):
    direct, relayed = server.client(), relay.client()
    expected = direct.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0)
    plain = relayed.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0)
    assert plain.choices[0].message.content == expected.choices[0].message.content
    assert plain.usage.completion_tokens == expected.usage.completion_tokens > 0
    assert plain.id != expected.id  # each is its own request upstream, not a cache

    chunks = list(relayed.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0,
                                                  stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.choices[0].message.content
    assert all(c.usage is None for c in chunks)  # usage is read for the metrics, not passed on unasked
    with_usage = list(relayed.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0,
                                                      stream=True, stream_options={"include_usage": True}))
    assert with_usage[-1].usage.completion_tokens == expected.usage.completion_tokens
    assert completion_tokens(relay) == 3 * expected.usage.completion_tokens


def test_upstream_errors_keep_our_shape_and_tools_take_the_engine_path(server, relay, tmp_path):
    with pytest.raises(openai.BadRequestError) as refused:  # the upstream's own verdict, passed on
        relay.client().chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10**9)
    assert "upstream" in refused.value.message and "maximum context length" in refused.value.message

    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    called = relay.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[tool], tool_choice="required",
        max_tokens=40, temperature=0)
    assert called.choices[0].message.tool_calls[0].function.name == "get_weather"

    gone = relaying("http://127.0.0.1:9/v1", tmp_path / "gone")
    try:
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as failed:
                answer = gone.client().chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream)
                list(answer) if stream else None
            assert failed.value.status_code == 502 and failed.value.code == "upstream_error"
    finally:
        gone.stop()


@pytest.mark.parametrize("asked", [False, True])
@pytest.mark.parametrize("size", [1, 7, 13, 64, 10_000])
def test_the_usage_event_is_found_and_counted_however_the_reads_cut_the_stream(asked, size):
    """The relay passes bytes as they are read; the usage event (counted always, dropped unless
    asked for) may be cut anywhere by the reads, its marker included."""
    from agentd.server.metrics import ServerMetrics
    from agentd.server.relay import _take_usage
    from agentd.server.generation import RequestRecord

    token = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    usage = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"total_tokens":12,"completion_tokens":5}}\n\n'
    stream = token * 3 + usage + b"data: [DONE]\n\n"
    record = RequestRecord(ServerMetrics(), "chat", MODEL)
    sent, held, seen = b"", b"", False
    for at in range(0, len(stream), size):
        data, held = held + stream[at:at + size], b""
        if not seen:
            data, held, seen = _take_usage(data, record, asked)
        sent += data
    sent += held
    record.done(200)
    assert seen and (record.prompt_tokens, record.completion_tokens) == (7, 5)
    assert sent == (stream if asked else token * 3 + b"data: [DONE]\n\n")
