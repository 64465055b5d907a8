"""The deploy / undeploy / list_deployments tools over a real DeploymentService on the embedded engine."""

from __future__ import annotations

import pytest

from agentd.agents.runtime import AgentLimits, AgentRuntime
from agentd.agents.steps import FinalAnswer, Observation, ToolProgress
from agentd.deployments import DeploymentService
from pipelines.embedded import EMBEDDED_MODEL_ID
from pipelines.engine import GenerationRequest, SamplingParams
from pipelines.registry import ModelRegistry
from tests.conftest import DATA_DIR
from tests.fixtures.scripted_model import ScriptedChatModel, answer, calls
from tools import ToolRegistry
from tools.builtin.deployment import DeploymentTools

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
async def setup(tmp_path):
    # A registry of its own (the session one is shared): deployments add and remove engines in it.
    registry = ModelRegistry([], DATA_DIR)
    service = DeploymentService(tmp_path, registry, check_s=0.2)
    await service.start()
    yield ToolRegistry([DeploymentTools(service)]), service, registry
    await service.close()
    await registry.close()


async def _reply(registry: ModelRegistry, model_id: str) -> str:
    request = GenerationRequest(params=SamplingParams(max_tokens=4, temperature=0),
                                messages=({"role": "user", "content": "Hi"},))
    return "".join([delta.text async for delta in registry.engine(model_id).stream(request)])


async def test_an_agent_deploys_the_embedded_model_with_progress_then_undeploys_it(setup, tmp_path):
    tools, service, registry = setup
    runtime = AgentRuntime(tools, tmp_path / "state", limits=AgentLimits(time_limit_s=200))
    await runtime.open()
    llm = ScriptedChatModel(acts=[calls(("deploy", {"model": "embedded", "engine": "embedded"})),
                                  answer("Deployed.")])
    agent_run = await runtime.start("agentd-react", [{"role": "user", "content": "deploy the small model"}], llm=llm)
    steps = [step async for step in agent_run]
    await runtime.close()

    progress = [step for step in steps if isinstance(step, ToolProgress)]
    assert progress and progress[0].name == "deploy"
    assert all(p.update["deployment_id"].startswith("dep-") for p in progress)
    assert "message=" in progress[-1].text()
    [observation] = [step for step in steps if isinstance(step, Observation)]
    assert not observation.is_error, observation.content
    assert f'"model": "{EMBEDDED_MODEL_ID}"' in observation.content and '"status": "ready"' in observation.content
    assert isinstance(steps[-1], FinalAnswer)
    assert await _reply(registry, EMBEDDED_MODEL_ID)  # the model id the tool named answers

    listed = await tools.invoke("list_deployments", {})
    assert listed.ok and [d["model"] for d in listed.value] == [EMBEDDED_MODEL_ID]
    assert listed.value[0]["engine"] == "embedded" and listed.value[0]["memory_mb"] > 100

    stopped = await tools.invoke("undeploy", {"deployment": EMBEDDED_MODEL_ID})  # by the model id it serves
    assert stopped.ok and stopped.value["status"] == "stopped"
    assert EMBEDDED_MODEL_ID not in registry.engines and EMBEDDED_MODEL_ID not in registry.specs
    assert (await tools.invoke("list_deployments", {})).value == []
    everything = await tools.invoke("list_deployments", {"include_stopped": True})
    assert [d["status"] for d in everything.value] == ["stopped"]


async def test_deploy_serves_a_lora_adapter_as_its_own_model_and_undeploy_by_id(setup, tiny, tmp_path):
    from tests.fixtures.lora_adapter import make_lora_adapter

    tools, service, registry = setup
    adapter = make_lora_adapter(tiny, tmp_path / "tiny-lora")
    deployed = await tools.invoke("deploy", {"model": str(tiny), "engine": "embedded", "adapters": [str(adapter)],
                                             "keep_alive": "10m"})
    assert deployed.ok, deployed.observation()
    summary = deployed.value
    assert summary["model"] == tiny.name and summary["adapter_models"] == ["tiny-lora"]
    assert summary["keep_alive_s"] == 600 and summary["status"] == "ready"
    assert await _reply(registry, "tiny-lora") != await _reply(registry, tiny.name)  # the adapter is applied

    dropped = await tools.invoke("undeploy", {"deployment": "tiny-lora"})  # an adapter's id: only the adapter
    assert dropped.ok and dropped.value["status"] == "ready" and "adapter_models" not in dropped.value
    assert "tiny-lora" not in registry.specs and await _reply(registry, tiny.name)

    stopped = await tools.invoke("undeploy", {"deployment": summary["deployment_id"]})
    assert stopped.ok and stopped.value["status"] == "stopped"
    assert not {tiny.name, "tiny-lora"} & set(registry.engines)


async def test_deploy_without_waiting_and_bad_requests_become_observations(setup, tiny):
    tools, service, registry = setup
    started = await tools.invoke("deploy", {"model": str(tiny), "engine": "embedded", "wait": False})
    assert started.ok and started.value["status"] in ("pending", "loading", "ready")
    assert (await service.wait(started.value["deployment_id"], timeout=60)).status == "ready"

    unknown = await tools.invoke("deploy", {"model": "gpt-9"})
    assert not unknown.ok and "does not exist" in unknown.observation() and "ft:" in unknown.observation()
    bad_keep_alive = await tools.invoke("deploy", {"model": str(tiny), "keep_alive": "soon"})
    assert not bad_keep_alive.ok and "keep_alive" in bad_keep_alive.observation()
    bad_engine = await tools.invoke("deploy", {"model": str(tiny), "engine": "tgi"})
    assert not bad_engine.ok and "engine" in bad_engine.observation()
    missing = await tools.invoke("undeploy", {"deployment": "nothing-like-it"})
    assert not missing.ok and "no running deployment" in missing.observation() and tiny.name in missing.observation()
    gone = await tools.invoke("undeploy", {"deployment": "dep-000000000000"})
    assert not gone.ok and "no deployment with id" in gone.observation()


async def test_a_wait_that_runs_out_says_it_keeps_loading(setup, tiny):
    tools, service, registry = setup
    result = await tools.invoke("deploy", {"model": str(tiny), "engine": "embedded", "max_wait_s": 0})
    assert result.ok and result.value["status"] in ("pending", "loading")  # loading takes a thread's time
    assert "keeps loading" in result.value["note"] and "list_deployments()" in result.value["note"]
    assert (await service.wait(result.value["deployment_id"], timeout=60)).status == "ready"
    deploy = tools.get("deploy")
    assert deploy.long_running and deploy.timeout >= deploy.parameters["properties"]["max_wait_s"]["maximum"]
    assert "Deploy (serve) a model" in deploy.description
