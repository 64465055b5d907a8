"""Agents as models, end to end: the embedded SmolLM2 through the official openai client."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image as PILImage
from prometheus_client.parser import text_string_to_metric_families

from agentd.config import Settings
from agentd.server.app import create_app
from agentd.store import StoreError
from agentd.tool_use import TOOL_USE_MODEL_ID
from pipelines.registry import ModelRegistry, ModelSpec
from tests.conftest import DATA_DIR, MODEL, RunningServer
from tools import File, Image

HANDBOOK = "# Handbook\n\n## Backups\n\nBackups run every night at 02:00 and are kept for 30 days.\n"


@pytest.fixture(scope="module")
def agent_server(registry, tmp_path_factory):
    running = RunningServer(create_app(Settings(data_dir=tmp_path_factory.mktemp("agents"), agent_max_steps=3),
                                       registry))
    url = File(HANDBOOK.encode(), "text/markdown", "handbook.md").to_data_url()
    ingested = httpx.post(f"{running.url}/v1/tools/knowledge_ingest", json={"document": url}, timeout=60).json()
    assert ingested["is_error"] is False
    yield running
    running.stop()


def stream_run(client, model: str, question: str):
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], stream=True))
    steps = [c.choices[0].delta.model_extra.get("agent_step") for c in chunks if c.choices]
    return chunks, [s for s in steps if s]


@pytest.mark.parametrize("model, question", [
    ("agentd-react", "What is 17 * 23?"),
    ("agentd-rewoo", "What is 12 * 12 + 5?"),
    ("agentd-planner", "What does the handbook say about backups?"),
])
def test_each_agent_type_streams_its_steps_and_an_answer(agent_server, model, question):
    client = agent_server.client()
    assert model in {m.id for m in client.models.list()}
    chunks, steps = stream_run(client, model, question)
    reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert steps[-1]["type"] in ("final_answer", "error") and reasoning
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)  # server-side calls stay server-side
    kinds = {s["type"] for s in steps}
    if model == "agentd-rewoo":
        assert "plan" in kinds or "retry" in kinds
    if model == "agentd-planner":
        assert {"plan", "node_started", "node_done"} <= kinds
    run = httpx.get(f"{agent_server.url}/v1/runs/{chunks[0].model_extra['run_id']}").json()
    assert run["agent"] == model and run["status"] == "completed" and run["answer"] == content
    assert [s["type"] for s in run["steps"]] == [s["type"] for s in steps]


def test_a_non_streamed_run_with_a_picture(agent_server):
    picture = Image.from_pil(PILImage.new("RGB", (12, 8), "red")).to_data_url()
    reply = agent_server.client().chat.completions.create(model="agentd-react", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is 2 + 2?"}, {"type": "image_url", "image_url": {"url": picture}}]}])
    message = reply.choices[0].message
    assert message.model_extra["agent_steps"][-1]["type"] in ("final_answer", "error")
    assert message.model_extra["reasoning_content"]
    run = httpx.get(f"{agent_server.url}/v1/runs/{reply.model_extra['run_id']}").json()
    assert "[image file-" in run["input"]  # the picture was stored and named for the agent


def test_disconnecting_stops_the_run(agent_server):
    body = {"model": "agentd-react", "stream": True, "messages": [{"role": "user", "content": "What is 99 * 99?"}]}
    with httpx.stream("POST", f"{agent_server.url}/v1/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                run_id = json.loads(line[6:])["run_id"]
                break
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = httpx.get(f"{agent_server.url}/v1/runs/{run_id}").json()["status"]
        if status != "running":
            break
        time.sleep(0.2)
    assert status == "cancelled"


def in_flight(running) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{running.url}/metrics").text):
        for sample in family.samples:
            if sample.name == "agentd_requests_in_flight" and sample.labels["endpoint"] == "chat":
                return sample.value
    return 0.0


def test_a_non_streamed_run_that_fails_is_counted_as_ended(agent_server, monkeypatch):
    def locked(*_args):
        raise StoreError(Path("runs.sqlite"), "database is locked")

    monkeypatch.setattr(agent_server.app.state.agents.runs, "start", locked)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as failed:
            agent_server.client().chat.completions.create(
                model="agentd-react", messages=[{"role": "user", "content": "What is 2 + 2?"}])
        assert failed.value.status_code == 503 and "database is locked" in failed.value.message
    assert in_flight(agent_server) == 0  # not one request left "being served" for ever


def test_agent_requests_that_make_no_sense_are_refused(agent_server):
    url = f"{agent_server.url}/v1/chat/completions"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with_tools = httpx.post(url, json={"model": "agentd-react", "tools": [tool],
                                       "messages": [{"role": "user", "content": "hi"}]})
    assert with_tools.status_code == 400 and with_tools.json()["error"]["param"] == "tools"
    ends_with_assistant = httpx.post(url, json={"model": "agentd-rewoo", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    assert ends_with_assistant.status_code == 400 and ends_with_assistant.json()["error"]["param"] == "messages"
    for field, value in (("logprobs", True), ("logit_bias", {"42": 5}), ("frequency_penalty", 1.0)):
        refused = httpx.post(url, json={"model": "agentd-react", field: value,
                                        "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == field
    missing = httpx.get(f"{agent_server.url}/v1/runs/run-nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"


def test_an_agent_whose_model_is_still_loading_answers_503(tmp_path):
    loading = ModelRegistry([ModelSpec(id=MODEL, kind="embedded")], DATA_DIR)  # never loaded
    running = RunningServer(create_app(Settings(data_dir=tmp_path), loading))
    try:
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as refused:
                running.client().chat.completions.create(
                    model="agentd-react", stream=stream, messages=[{"role": "user", "content": "What is 2 + 2?"}])
            assert refused.value.status_code == 503  # before any chunk: a clear error, not a broken stream
            assert refused.value.body["type"] == "service_unavailable" and "still loading" in refused.value.body["message"]
        # Chatting with the agents' tool-use adapter directly waits for its base model the same way.
        with pytest.raises(openai.APIStatusError) as refused:
            running.client().chat.completions.create(model=TOOL_USE_MODEL_ID,
                                                     messages=[{"role": "user", "content": "Hi"}])
        assert refused.value.status_code == 503 and "still loading" in refused.value.body["message"]
        assert TOOL_USE_MODEL_ID not in loading.engines  # the base weights were not loaded a second time
    finally:
        running.stop()
