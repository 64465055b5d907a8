"""A deployment on vLLM-CPU for real, through agentd's HTTP API and its OpenAI-upstream proxy.

One deployment for the module (the embedded model with enforce_eager and a LoRA adapter, ≈ 30-60 s
to start on 2 cores): chat through agentd, the adapter as its own model with its parent, a
kill -9 that the watchdog repairs while the deployment says so, and an undeploy that frees the
process group.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from agentd.config import Settings
from agentd.deployments.vllm import VLLMUnavailable, find_vllm_python
from agentd.server.app import create_app
from pipelines.embedded import embedded_model_folder
from pipelines.registry import ModelRegistry
from tests.conftest import DATA_DIR, RunningServer
from tests.fixtures.lora_adapter import make_lora_adapter

try:
    find_vllm_python()
except VLLMUnavailable as missing:
    if not os.environ.get("CI"):
        pytest.skip(f"no vLLM venv ({missing}); CI must have one", allow_module_level=True)

SERVED, ADAPTER = "smollm2-on-vllm", "smollm2-on-vllm-lora"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("vllm-deployments"), vllm_startup_timeout_s=400)
    running = RunningServer(create_app(settings, ModelRegistry([], DATA_DIR)))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def deployment(server, tmp_path_factory) -> Iterator[dict]:
    adapter = make_lora_adapter(embedded_model_folder(DATA_DIR), tmp_path_factory.mktemp("lora") / "lora", seed=0)
    answer = httpx.post(f"{server.url}/v1/deployments?wait=true", timeout=600, json={
        "model": "embedded", "name": SERVED, "engine": "vllm", "engine_args": {"enforce_eager": True},
        "adapters": [{"name": ADAPTER, "path": str(adapter)}]})
    assert answer.status_code == 200, answer.text
    yield answer.json()
    httpx.delete(f"{server.url}/v1/deployments/{answer.json()['id']}", timeout=60)


def test_chat_goes_through_agentd_to_vllm_with_the_adapter_as_a_child_model(server, deployment):
    assert deployment["engine"] == "vllm" and deployment["status"] == "ready" and deployment["pid"]
    assert deployment["url"].startswith("http://127.0.0.1:") and deployment["memory_bytes"] > 100_000_000
    listed = {m.id: m.model_extra.get("parent") for m in server.client().models.list()}
    assert listed[SERVED] is None and listed[ADAPTER] == SERVED
    client = server.client()
    messages = [{"role": "user", "content": "Name a fruit."}]
    plain = client.chat.completions.create(model=SERVED, messages=messages, max_tokens=12, temperature=0)
    tuned = client.chat.completions.create(model=ADAPTER, messages=messages, max_tokens=12, temperature=0)
    assert plain.choices[0].message.content and plain.choices[0].message.content != tuned.choices[0].message.content
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model=SERVED, messages=messages, max_tokens=12, temperature=0, stream=True) if chunk.choices)
    assert streamed == plain.choices[0].message.content


def test_a_killed_vllm_is_restarted_and_an_undeploy_frees_its_processes(server, deployment):
    url = f"{server.url}/v1/deployments/{deployment['id']}"
    os.kill(deployment["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 400
    while (now := httpx.get(url).json())["restarts"] < 1 or now["status"] != "ready":
        assert time.monotonic() < deadline, now
        time.sleep(1)
    assert now["pid"] != deployment["pid"]
    events = [json.loads(line[5:]) for line in httpx.get(f"{url}/events", timeout=60).iter_lines()
              if line.startswith("data:")]
    assert {"crashed", "restarting"} <= {event["type"] for event in events}
    answer = server.client().chat.completions.create(model=SERVED, messages=[{"role": "user", "content": "Hi"}],
                                                     max_tokens=4)
    assert answer.choices[0].message.content is not None

    stopped = httpx.delete(url, timeout=60).json()
    assert stopped["status"] == "stopped" and not psutil.pid_exists(now["pid"])
    assert SERVED not in {m.id for m in server.client().models.list()}
