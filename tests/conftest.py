"""Shared fixtures: the embedded model loaded once, real servers on loopback, the openai client."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from agentd.config import Settings
from agentd.server.background import BackgroundServer
from agentd.server.app import create_app
from pipelines.embedded import EMBEDDED_MODEL_ID
from pipelines.registry import ModelRegistry, ModelSpec

DATA_DIR = Path(os.environ.get("AGENTD_TEST_DATA_DIR", Path(__file__).parent.parent / ".agentd"))
MODEL = EMBEDDED_MODEL_ID
# The engine the suite's servers and shared registry run: transformers unless AGENTD_ENGINE says openvino
# (the server's default). Tests that pin model behaviour were written against transformers' fp32 greedy
# output; tests/test_openvino_engine.py holds the openvino engine to it.
ENGINE = os.environ.setdefault("AGENTD_ENGINE", "transformers")


class RunningServer(BackgroundServer):
    def client(self, api_key: str = "unused") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def registry() -> Iterator[ModelRegistry]:
    loaded = ModelRegistry([ModelSpec(id=MODEL, kind="embedded")], DATA_DIR, backend=ENGINE)
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


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Llama (the embedded tokenizer): fine-tunes in seconds."""
    from tests.fixtures.tiny_model import make_tiny_model
    from pipelines.embedded import embedded_model_folder

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", embedded_model_folder(DATA_DIR))


@pytest.fixture(scope="session")
def local(tiny):
    """The tiny model under evaluation, prompted raw: compared with plain transformers by hand."""
    from evaluation.models import LocalModel

    model = LocalModel.load("tiny", tiny, chat_template=False)
    yield model
    asyncio.run(model.close())


@pytest.fixture(scope="session")
def tickets(tmp_path_factory) -> Path:
    """40 ticket-routing chat examples as OpenAI messages JSONL."""
    from tests.fixtures.tickets import write_tickets

    return write_tickets(tmp_path_factory.mktemp("data") / "tickets.jsonl")
