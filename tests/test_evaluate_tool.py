"""The evaluation tools through a ReAct agent (scripted model): progress streams while the job runs."""

from __future__ import annotations

import pytest

from agentd.agents.runtime import AgentLimits, AgentRuntime
from agentd.agents.steps import FinalAnswer, Observation, ToolProgress
from agentd.jobs.evaluate import EvaluationRequestError, local_target
from agentd.jobs.service import JobService
from pipelines.registry import ModelSpec
from tests.conftest import DATA_DIR, MODEL
from tests.fixtures.scripted_model import ScriptedChatModel, answer, calls
from tools import ToolRegistry
from tools.builtin.evaluation import EvaluationTools

pytestmark = pytest.mark.timeout(600)


@pytest.fixture()
def setup(tmp_path, tiny):
    def model_target(model: str) -> dict:
        if model == "tiny":
            return local_target(ModelSpec(id="tiny", kind="local", location=str(tiny)), tmp_path)
        if model == MODEL:
            return local_target(ModelSpec(id=MODEL, kind="embedded"), DATA_DIR)
        raise EvaluationRequestError(f"model {model!r} is not served here", param="model")

    # Started by each test that runs jobs, on the test's own event loop.
    service = JobService(tmp_path, model_target=model_target, poll_s=0.1)
    return ToolRegistry([EvaluationTools(service, poll_s=0.1)]), service


async def test_an_agent_evaluates_a_model_and_sees_progress(setup, tmp_path):
    tools, service = setup
    await service.start()
    runtime = AgentRuntime(tools, tmp_path / "state", limits=AgentLimits(time_limit_s=300))
    await runtime.open()
    llm = ScriptedChatModel(acts=[calls(("evaluate", {"model": "tiny", "tasks": ["arc_easy"], "limit": 6})),
                                  answer("Evaluated.")])
    agent_run = await runtime.start("agentd-react", [{"role": "user", "content": "evaluate tiny on arc_easy"}], llm=llm)
    steps = [step async for step in agent_run]
    await runtime.close()
    progress = [step for step in steps if isinstance(step, ToolProgress)]
    assert progress and progress[0].name == "evaluate"
    assert progress[-1].update["total"] == 6 and progress[-1].update["task"] == "arc_easy"
    [observation] = [step for step in steps if isinstance(step, Observation)]
    assert not observation.is_error, observation.content
    assert '"status": "succeeded"' in observation.content and "±" in observation.content
    assert isinstance(steps[-1], FinalAnswer)

    board = await tools.invoke("leaderboard", {})
    assert board.ok and "tiny" in board.observation() and "arc_easy" in board.observation()
    await service.close()


async def test_compare_models_gives_per_task_deltas_and_a_noise_verdict(setup):
    tools, service = setup
    await service.start()
    result = await tools.invoke("compare_models", {"model_a": MODEL, "model_b": "tiny", "tasks": ["arc_easy"],
                                                   "limit": 6})
    assert result.ok, result.observation()
    [comparison] = result.value["comparisons"]
    assert result.value["model_a"] == MODEL and result.value["model_b"] == "tiny"
    assert comparison["task"] == "arc_easy" and comparison["metric"].startswith("acc")
    assert comparison["better"] in (MODEL, "tiny", None) and isinstance(comparison["significant"], bool)
    assert comparison["difference"] == pytest.approx(comparison["b"] - comparison["a"], abs=1e-3)
    await service.close()


async def test_without_waiting_and_with_bad_input(setup):
    tools, service = setup  # not started: the job stays queued
    assert (await tools.invoke("leaderboard", {})).value == "Nothing has been evaluated yet."
    started = await tools.invoke("evaluate", {"model": "tiny", "tasks": ["arc_easy"], "limit": 2, "wait": False})
    assert started.ok and started.value["job_id"].startswith("evaljob-") and started.value["status"] == "queued"
    waited = await tools.invoke("evaluate", {"model": "tiny", "tasks": ["arc_easy"], "limit": 2, "max_wait_s": 0.3})
    assert waited.ok and "still queued" in waited.value["note"]
    unknown = await tools.invoke("evaluate", {"model": "gpt-9", "tasks": ["arc_easy"]})
    assert not unknown.ok and "not served here" in unknown.observation()
    bad_task = await tools.invoke("evaluate", {"model": "tiny", "tasks": ["no_such_task"]})
    assert not bad_task.ok and "tasks[0]" in bad_task.observation()
    same = await tools.invoke("compare_models", {"model_a": "tiny", "model_b": "tiny", "tasks": ["arc_easy"]})
    assert not same.ok and "same model" in same.observation()
    evaluate = tools.get("evaluate")
    assert evaluate.long_running and evaluate.timeout >= evaluate.parameters["properties"]["max_wait_s"]["maximum"]
    await service.close()
