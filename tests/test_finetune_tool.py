"""The finetune tool through a ReAct agent (scripted model): progress streams while the job runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.agents.runtime import AgentLimits, AgentRuntime
from agentd.agents.steps import FinalAnswer, Observation, ToolProgress
from agentd.jobs.service import JobService
from tests.fixtures.scripted_model import ScriptedChatModel, answer, calls
from tools import FileStore, ToolRegistry
from tools.builtin.jobs import JobTools


@pytest.fixture()
def setup(tmp_path, tiny, tickets):

    def base_folder(model: str) -> Path:
        if model != "tiny":
            raise ValueError(f"model {model!r} is not served here")
        return tiny

    files = FileStore(tmp_path / "files")
    # Started by each test that runs jobs, on the test's own event loop.
    service = JobService(tmp_path, file_store=files, base_folder=base_folder, poll_s=0.1)
    data = files.put(tickets.read_bytes(), "tickets.jsonl", purpose="fine-tune")
    tools = ToolRegistry([JobTools(service, poll_s=0.1)], file_store=files)
    return tools, data.id, service


async def test_an_agent_fine_tunes_and_sees_progress(setup, tmp_path):
    tools, file_id, service = setup
    await service.start()
    runtime = AgentRuntime(tools, tmp_path / "state", limits=AgentLimits(time_limit_s=300))
    await runtime.open()
    llm = ScriptedChatModel(acts=[
        calls(("finetune", {"model": "tiny", "training_file": file_id, "method": "full", "max_steps": 6,
                            "learning_rate": 0.003})),
        answer("Fine-tuned.")])
    agent_run = await runtime.start("agentd-react", [{"role": "user", "content": "fine-tune tiny"}], llm=llm)
    steps = [step async for step in agent_run]
    await runtime.close()
    progress = [step for step in steps if isinstance(step, ToolProgress)]
    assert [p.update["step"] for p in progress][-1] == 6 and progress[0].name == "finetune"
    assert "loss=" in progress[-1].text()
    [observation] = [step for step in steps if isinstance(step, Observation)]
    assert not observation.is_error and "ft:tiny:agentd::" in observation.content
    assert '"status": "succeeded"' in observation.content
    assert isinstance(steps[-1], FinalAnswer)

    listed = await tools.invoke("list_jobs", {"status": "succeeded"})
    assert listed.ok and "ft:tiny" in listed.observation()
    await service.close()


async def test_job_tools_without_waiting_and_with_bad_input(setup):
    tools, file_id, service = setup
    started = await tools.invoke("finetune", {"model": "tiny", "training_file": file_id, "wait": False,
                                              "max_steps": 2, "method": "full"})
    assert started.ok and '"job_id": "ftjob-' in started.observation()
    job_id = started.value["job_id"]
    status = await tools.invoke("job_status", {"job_id": job_id})
    assert status.ok and status.value["status"] in ("queued", "running", "succeeded")
    unknown = await tools.invoke("finetune", {"model": "gpt-9", "training_file": file_id})
    assert not unknown.ok and "not served here" in unknown.observation()
    missing = await tools.invoke("finetune", {"model": "tiny", "training_file": "file-nope"})
    assert not missing.ok and "no file with id" in missing.observation()
    assert "no job with id" in (await tools.invoke("job_status", {"job_id": "ftjob-x"})).observation()
    await service.close()


async def test_a_wait_that_runs_out_says_the_job_still_runs_and_how_to_follow_it(setup):
    tools, file_id, service = setup  # not started: the job stays queued however long the tool waits
    result = await tools.invoke("finetune", {"model": "tiny", "training_file": file_id, "max_wait_s": 0.3,
                                             "max_steps": 2, "method": "full"})
    job_id = result.value["job_id"]
    assert result.ok and result.value["status"] == "queued"
    assert "still queued" in result.value["note"] and f'job_status(job_id="{job_id}")' in result.value["note"]
    finetune = tools.get("finetune")
    assert finetune.timeout >= finetune.parameters["properties"]["max_wait_s"]["maximum"]
    await service.close()
