"""/v1/deployments over real HTTP with the openai client: deploy, chat, adapters, events, errors, restarts."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from agentd.config import Settings
from agentd.server.app import create_app
from pipelines.embedded import EMBEDDED_MODEL_ID
from pipelines.registry import ModelRegistry
from tests.conftest import DATA_DIR, RunningServer
from tests.fixtures.lora_adapter import make_lora_adapter


def serve(data_dir: Path) -> RunningServer:
    """An app whose startup models are empty: everything it serves is a deployment."""
    settings = Settings(data_dir=data_dir, deployment_check_s=0.2, vllm_python=data_dir / "no-vllm" / "python")
    return RunningServer(create_app(settings, ModelRegistry([], DATA_DIR)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deployments")


@pytest.fixture(scope="module")
def server(data_dir) -> Iterator[RunningServer]:
    running = serve(data_dir)
    yield running
    running.stop()


@pytest.fixture()
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/v1", timeout=120) as session:
        yield session


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory) -> Path:
    return make_lora_adapter(tiny, tmp_path_factory.mktemp("lora") / "tiny-lora")


def models(http: httpx.Client) -> dict[str, str | None]:
    return {entry["id"]: entry["parent"] for entry in http.get("/models").json()["data"]}


def say(client: openai.OpenAI, model: str) -> str:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=5, temperature=0)
    return answer.choices[0].message.content


def test_the_embedded_model_is_deployed_chatted_with_and_undeployed(server, http):
    ready = http.post("/deployments?wait=true", json={"model": "embedded", "keep_alive": "1h"})
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert (body["object"], body["status"], body["engine"], body["served_model"]) == (
        "deployment", "ready", "embedded", EMBEDDED_MODEL_ID)
    assert body["memory_bytes"] > 50_000_000 and body["keep_alive"] == 3600 and body["expires_at"] > time.time()
    assert models(http)[EMBEDDED_MODEL_ID] is None
    assert say(server.client(), EMBEDDED_MODEL_ID)
    assert http.get(f"/deployments/{body['id']}").json()["last_used_at"] is not None
    assert [d["id"] for d in http.get("/deployments").json()["data"]] == [body["id"]]

    stopped = http.delete(f"/deployments/{body['id']}")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert EMBEDDED_MODEL_ID not in models(http)
    with pytest.raises(openai.NotFoundError):
        say(server.client(), EMBEDDED_MODEL_ID)
    assert http.get("/deployments").json()["data"] == []
    assert body["id"] in [d["id"] for d in http.get("/deployments?all=true").json()["data"]]


def test_an_adapter_joins_and_leaves_a_running_deployment(server, http, tiny, adapter):
    pending = http.post("/deployments", json={"model": str(tiny), "name": "tiny-api"})
    assert pending.status_code == 200 and pending.json()["status"] in ("pending", "loading")
    deployment_id = pending.json()["id"]
    with http.stream("GET", f"/deployments/{deployment_id}/events") as stream:
        events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert [e["type"] for e in events][:3] == ["created", "loading", "ready"]  # the stream ended at ready
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    added = http.post(f"/deployments/{deployment_id}/adapters",
                      json={"adapter": {"name": "acme/tiny-lora", "path": str(adapter)}})
    assert added.status_code == 200, added.text
    assert added.json()["adapters"] == [{"id": "acme/tiny-lora", "path": str(adapter.resolve())}]
    assert models(http)["acme/tiny-lora"] == "tiny-api" and models(http)["tiny-api"] is None
    client = server.client()
    assert isinstance(say(client, "acme/tiny-lora"), str)

    removed = http.delete(f"/deployments/{deployment_id}/adapters/acme/tiny-lora")
    assert removed.status_code == 200 and removed.json()["adapters"] == []
    assert "acme/tiny-lora" not in models(http)
    with pytest.raises(openai.NotFoundError):
        say(client, "acme/tiny-lora")
    replay = [json.loads(line[5:]) for line in
              http.get(f"/deployments/{deployment_id}/events", params={"after": events[-1]["seq"]}).iter_lines()
              if line.startswith("data:")]
    assert [(e["type"], e.get("adapter")) for e in replay] == [("adapter_added", "acme/tiny-lora"),
                                                                ("adapter_removed", "acme/tiny-lora")]
    assert http.delete(f"/deployments/{deployment_id}").json()["status"] == "stopped"


def test_bad_requests_get_openai_errors_naming_the_field(http, tiny, tmp_path):
    def error(response: httpx.Response, status: int) -> dict:
        assert response.status_code == status, response.text
        return response.json()["error"]

    unknown = error(http.post("/deployments", json={"model": "no-such-model"}), 404)
    assert (unknown["code"], unknown["param"], unknown["type"]) == ("model_not_found", "model", "invalid_request_error")
    assert error(http.post("/deployments", json={"model": str(tiny), "engine": "gpu"}), 400)["param"] == "engine"
    assert error(http.post("/deployments", json={"model": str(tiny), "keep_alive": "forever"}), 400)["param"] == \
        "keep_alive"
    # A boolean is no duration (read as 1 s it would unload the model at once).
    assert "keep_alive" in error(http.post("/deployments", json={"model": str(tiny), "keep_alive": True}), 400)["param"]
    assert error(http.post("/deployments", json={"model": str(tiny), "colour": "red"}), 400)["param"] == "colour"
    assert "make vllm" in error(http.post("/deployments", json={"model": str(tiny), "engine": "vllm"}), 400)["message"]
    assert error(http.post("/deployments", json={"model": str(tiny), "name": "t", "adapters": ["/nowhere"]}),
                 404)["code"] == "adapter_not_found"
    for method, path in [("GET", "/deployments/dep-0"), ("DELETE", "/deployments/dep-0"),
                         ("GET", "/deployments/dep-0/events"), ("POST", "/deployments/dep-0/adapters"),
                         ("DELETE", "/deployments/dep-0/adapters/x")]:
        body = {"adapter": "x"} if method == "POST" else None
        assert error(http.request(method, path, json=body), 404)["code"] == "deployment_not_found", path

    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tiny / "config.json", broken / "config.json")
    failed = error(http.post("/deployments?wait=true", json={"model": str(broken)}), 422)
    assert failed["code"] == "deployment_failed" and "failed" in failed["message"]
    listed = http.get("/deployments").json()["data"]
    assert [d["status"] for d in listed if d["model"] == str(broken)] == ["failed"]
    assert "broken" not in models(http)


def test_a_new_server_on_the_same_data_dir_serves_the_deployment_again(tiny, tmp_path):
    first = serve(tmp_path)
    try:
        created = httpx.post(f"{first.url}/v1/deployments?wait=true", json={"model": str(tiny), "name": "kept"},
                             timeout=120).json()
        assert created["status"] == "ready"
    finally:
        first.stop()
    second = serve(tmp_path)
    try:
        with httpx.Client(base_url=f"{second.url}/v1", timeout=120) as http:
            deadline = time.monotonic() + 60
            while http.get(f"/deployments/{created['id']}").json()["status"] != "ready":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert "kept" in models(http)
            assert isinstance(say(second.client(), "kept"), str)
    finally:
        second.stop()
