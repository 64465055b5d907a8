"""The plain-words request, as a user types it, through the openai client: the embedded model thinks
(with its tool-use adapter, the server's default), fine-tunes, evaluates the base and the tuned
model, answers with a comparison, and deploys the better one when asked next.

The default run uses 16 uploaded tickets and 8 support_qa questions (≈ 3 min on 2 cores); the
`slow` one is the README's request word for word on examples/support_tickets.jsonl."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from agentd.config import Settings
from agentd.server.app import create_app
from agentd.tool_use import manifest
from pipelines.registry import ModelRegistry, ModelSpec
from tests.conftest import DATA_DIR, MODEL, RunningServer
from tests.fixtures.tickets import ticket_records

pytestmark = pytest.mark.skipif(manifest() is None, reason="the tool-use adapter is not in agentd/tool_use/adapter")
WORKFLOW = {"tune_and_evaluate", "finetune", "evaluate", "compare_models"}


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[openai.OpenAI]:
    """A server of its own, as `make run` starts it: what it fine-tunes and deploys is recorded in its own data
    folder and registry, not in the session server's that other tests count models in."""
    registry = ModelRegistry([ModelSpec(id=MODEL, kind="embedded")], DATA_DIR)
    asyncio.run(registry.load_all())
    server = RunningServer(create_app(Settings(data_dir=tmp_path_factory.mktemp("plain-words")), registry))
    try:
        yield server.client()
    finally:
        server.stop()
        asyncio.run(registry.close())


def _run(client, request: str, thread: str | None = None) -> tuple[list[dict], str, str]:
    """The steps, the answer as streamed and the thread id of one agent request."""
    stream = client.with_options(timeout=1200).chat.completions.create(
        model="agentd-react", stream=True, messages=[{"role": "user", "content": request}],
        extra_headers={"X-Agentd-Thread-Id": thread} if thread else None)
    steps, content, thread_id = [], [], thread
    for chunk in stream:
        extra = chunk.model_extra or {}
        thread_id = extra.get("thread_id", thread_id)
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is None:
            continue
        if delta.content:
            content.append(delta.content)
        if (delta.model_extra or {}).get("agent_step"):
            steps.append(delta.model_extra["agent_step"])
    return steps, "".join(content), thread_id


def _check_the_comparison(steps: list[dict], answer: str) -> str:
    calls = [s for s in steps if s["type"] == "tool_call"]
    assert calls and {c["name"] for c in calls} <= WORKFLOW | {"job_status"}, calls
    assert any(s["type"] == "tool_progress" for s in steps), "no progress streamed while training"
    errors = [s for s in steps if s["type"] == "observation" and s.get("is_error")]
    assert not errors, errors
    workflow = [s for s in steps if s["type"] == "observation" and s["name"] == "tune_and_evaluate"]
    assert workflow, f"the fine-tune and evaluation were done by hand: {[c['name'] for c in calls]}"
    result = json.loads(workflow[0]["content"])
    assert result["tuned_model"].startswith("ft:") and result["better"] in (result["tuned_model"], result["base_model"])
    # The answer quotes what the tools found: the better model and the table of scores.
    assert result["better"] in answer and "|" in answer, answer
    return result["better"]


def test_fine_tune_and_evaluate_in_plain_words(client):
    upload = client.files.create(file=("tickets.jsonl", "".join(json.dumps(r) + "\n" for r in ticket_records(16, seed=5))),
                                 purpose="fine-tune")
    steps, answer, thread = _run(client, f"Fine-tune smollm2 on {upload.id} with LoRA, then evaluate the base model "
                                         "and the tuned one on the first 8 questions of support_qa and tell me "
                                         "which is better.")
    assert any(s.get("type") == "final_answer" for s in steps)
    better = _check_the_comparison(steps, answer)

    steps, answer, _ = _run(client, "Now deploy the better one.", thread)
    deploy = next(s for s in steps if s["type"] == "tool_call")
    assert deploy["name"] == "deploy" and deploy["arguments"]["model"] == better
    observation = next(s for s in steps if s["type"] == "observation" and s["call_id"] == deploy["call_id"])
    # The base model is served already: the deployments service says so (an error the agent reads).
    assert not observation["is_error"] or "already" in observation["content"], observation
    assert better in {m.id for m in client.models.list()}


@pytest.mark.slow
def test_the_readme_request_word_for_word(client):
    assert Path("examples/support_tickets.jsonl").is_file()
    steps, answer, _ = _run(client, "Fine-tune smollm2 on examples/support_tickets.jsonl with LoRA, then evaluate "
                                    "the base model and the tuned one on the support_qa task and tell me which is "
                                    "better.")
    assert _check_the_comparison(steps, answer).startswith("ft:")
