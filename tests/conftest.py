"""Shared fixtures: the embedded model loaded once, real servers on loopback, the openai client."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from agentd.config import Settings
from agentd.server.app import create_app
from pipelines.embedded import EMBEDDED_MODEL_ID
from pipelines.registry import ModelRegistry, ModelSpec

DATA_DIR = Path(os.environ.get("AGENTD_TEST_DATA_DIR", Path(__file__).parent.parent / ".agentd"))
MODEL = EMBEDDED_MODEL_ID


class RunningServer:
    def __init__(self, app) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.app = app
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.time() + 30
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture(scope="session")
def registry() -> Iterator[ModelRegistry]:
    loaded = ModelRegistry([ModelSpec(id=MODEL, kind="embedded")], DATA_DIR)
    asyncio.run(loaded.load_all())
    assert loaded.ready, loaded.failures
    yield loaded
    asyncio.run(loaded.close())


@pytest.fixture(scope="session")
def engine(registry):
    return registry.engines[MODEL]


def start_server(registry: ModelRegistry, **settings) -> RunningServer:
    return RunningServer(create_app(Settings(data_dir=DATA_DIR, **settings), registry))


@pytest.fixture(scope="session")
def server(registry) -> Iterator[RunningServer]:
    running = start_server(registry)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    return server.client()


@pytest.fixture()
def http(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as session:
        yield session
