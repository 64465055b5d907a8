"""Health while loading, metrics that move, and cancellation when a client goes away."""

import re
import time

import httpx
import openai
import pytest

from agentd.config import Settings
from agentd.server.app import create_app
from pipelines.registry import ModelRegistry, ModelSpec
from tests.conftest import DATA_DIR, MODEL, RunningServer


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_health_is_503_until_models_are_loaded_and_says_why(tmp_path):
    waiting = ModelRegistry([ModelSpec(id="later", kind="local", location="/nowhere")], DATA_DIR)
    # Its own data folder: deployments other tests recorded would be served (on demand) here too.
    server = RunningServer(create_app(Settings(data_dir=tmp_path), waiting))
    try:
        health = httpx.get(f"{server.url}/health")
        assert health.status_code == 503 and health.json()["models"] == {"later": "loading"}
        with pytest.raises(openai.InternalServerError) as loading:
            server.client().chat.completions.create(model="later", messages=[{"role": "user", "content": "x"}])
        assert loading.value.status_code == 503 and "loading" in loading.value.body["message"]
        import asyncio

        asyncio.run(waiting.load_all())  # the folder does not exist: loading fails, and says so
        health = httpx.get(f"{server.url}/health")
        assert health.status_code == 503 and health.json()["models"] == {"later": "failed"}
    finally:
        server.stop()


def test_health_ready(http):
    response = http.get("/health")
    models = response.json()["models"]
    # Beside the start-up model: the agents' tool-use adapter and fine-tuned models, loaded when first used.
    assert response.status_code == 200 and models[MODEL] == "ready", models
    assert set(models.values()) <= {"ready", "on_demand"}, models


def test_metrics_move(client, http):
    before = http.get("/metrics").text
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                        max_tokens=4, stream=True))
    after = http.get("/metrics").text
    for name, labels, grew_by in [
        ("agentd_requests_total", {"endpoint": "chat", "status": "200"}, 2),
        ("agentd_completion_tokens_total", {"model": MODEL}, 2),
        ("agentd_time_to_first_token_seconds_count", {"model": MODEL}, 2),
        ("agentd_request_latency_seconds_count", {"endpoint": "chat"}, 2),
    ]:
        assert metric(after, name, **labels) - metric(before, name, **labels) >= grew_by, name
    assert metric(after, "agentd_requests_in_flight", endpoint="chat") == 0
    http.post("/v1/chat/completions", json={"model": "nope", "messages": []})
    assert metric(http.get("/metrics").text, "agentd_requests_total", status="200") >= 2


def test_disconnect_cancels_generation(server, engine, http):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 2000, "stream": True, "temperature": 1.0, "seed": 1, "stop": []}
    with httpx.Client(base_url=server.url, timeout=60) as session:
        with session.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            for _ in range(6):
                next(lines)
            assert engine.active_sequences == 1
    deadline = time.time() + 1.5
    while engine.active_sequences and time.time() < deadline:
        time.sleep(0.05)
    assert engine.active_sequences == 0
    assert metric(http.get("/metrics").text, "agentd_engine_active_sequences", model=MODEL) == 0
