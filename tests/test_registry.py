"""The model registry's on-demand models: found by id when first asked for, unloaded least recently
used under a memory budget. Real engines on the tiny model."""

from __future__ import annotations

import asyncio

from pipelines.engine import GenerationRequest, SamplingParams
from pipelines.registry import ModelRegistry, ModelSpec
from tests.conftest import DATA_DIR


def on_demand(tiny, budget_models: float, ids: str = "abc") -> ModelRegistry:
    """A registry whose on-demand budget holds `budget_models` copies of the tiny model."""
    size = sum(path.stat().st_size for path in tiny.glob("*.safetensors"))
    registry = ModelRegistry([], DATA_DIR, on_demand_memory_mb=budget_models * size / 2**20)
    for model_id in ids:
        registry.add(ModelSpec(id=model_id, kind="local", location=str(tiny)))
    return registry


async def test_the_least_recently_used_idle_model_makes_room(tiny):
    registry = on_demand(tiny, 2.5)
    await registry.ensure("a")
    await registry.ensure("b")
    first_a = registry.engines["a"]
    await registry.ensure("a")  # used again: now b is the least recently used
    await registry.ensure("c")
    assert set(registry.engines) == {"a", "c"} and registry.engines["a"] is first_a
    assert registry.ready and not registry.failures
    await registry.ensure("b")  # unloaded models load again when asked for
    assert set(registry.engines) == {"c", "b"}
    await registry.close()


async def test_without_a_budget_every_model_stays_loaded(tiny):
    registry = on_demand(tiny, 1.0)
    registry.on_demand_memory_mb = None
    for model_id in "abc":
        await registry.ensure(model_id)
    assert set(registry.engines) == {"a", "b", "c"}
    await registry.close()


async def test_an_unknown_id_is_resolved_once_then_served(tiny):
    registry = ModelRegistry([], DATA_DIR)
    asked = []

    def resolve(model_id: str) -> ModelSpec | None:
        asked.append(model_id)
        return ModelSpec(id=model_id, kind="local", location=str(tiny)) if model_id.startswith("ft:") else None

    registry.resolve = resolve
    await registry.ensure("nonsense")
    assert "nonsense" not in registry.specs and not registry.failures and registry.ready
    await registry.ensure("ft:tiny")
    await registry.ensure("ft:tiny")
    assert asked == ["nonsense", "ft:tiny"] and "ft:tiny" in registry.engines and "ft:tiny" in registry.on_demand
    await registry.close()


async def test_a_leased_model_is_not_unloaded_to_make_room(tiny):
    registry = on_demand(tiny, 1.5)
    lease = await registry.lease("a")  # a request holding "a", between its validation and its stream
    await registry.ensure("b")
    assert set(registry.engines) == {"a", "b"}  # over the budget rather than pulling "a" from under it
    request = GenerationRequest(params=SamplingParams(max_tokens=3, temperature=0), prompt="Hello")
    assert [delta async for delta in lease.engine.stream(request)][-1].finish_reason == "length"
    lease.release()
    await registry.ensure("c")
    assert set(registry.engines) == {"c"}
    both = await asyncio.gather(registry.lease("a"), registry.lease("b"))  # loaded at once, both held
    assert set(registry.engines) == {"a", "b"} and [lease.engine for lease in both] == [
        registry.engines["a"], registry.engines["b"]]
    await registry.close()


async def test_concurrent_loads_under_a_budget_do_not_fail_healthy_models(tiny):
    registry = on_demand(tiny, 1.0, ids="abcd")
    registry.on_demand_memory_mb = None
    await registry.ensure("a")
    await registry.ensure("b")
    registry.on_demand_memory_mb = 1.5 * registry._sizes["a"] / 2**20  # now both must go to make room
    await asyncio.gather(registry.ensure("c"), registry.ensure("d"))
    assert not registry.failures and registry.ready
    assert set(registry.engines) == {"d"}  # one load at a time, each unloading what it must
    await registry.close()


async def test_an_agent_run_keeps_its_on_demand_brain_loaded_until_it_ends(tiny, tmp_path):
    from agentd.agents.runtime import AgentRuntime
    from tools import ToolRegistry

    registry = on_demand(tiny, 1.5, ids="abc")
    runtime = AgentRuntime(ToolRegistry(), tmp_path, registry, "a")
    await runtime.open()
    agent_run = await runtime.start("agentd-react", [{"role": "user", "content": "hi"}])
    await registry.ensure("b")  # the budget holds one, but a is the brain of a run not yet ended
    assert set(registry.engines) == {"a", "b"}
    steps = [step async for step in agent_run]  # no tools: the random model can only answer
    assert agent_run.status in ("completed", "failed") and steps  # ended, whatever the random model said
    await registry.ensure("c")  # the run has ended: its brain is idle and may make room
    assert set(registry.engines) == {"c"}
    await runtime.close()
    await registry.close()


async def test_models_offered_while_the_startup_models_load_do_not_stop_that_loading():
    """Recovered deployments and the jobs service's fine-tunes add specs while `load_all` awaits."""
    upstream = "http://127.0.0.1:9/v1"  # an upstream engine is made without connecting
    registry = ModelRegistry([ModelSpec(id=f"u{i}", kind="upstream", location=upstream) for i in range(3)], DATA_DIR)
    loading = asyncio.create_task(registry.load_all())
    await asyncio.sleep(0)  # load_all is now awaiting its first model
    registry.add_managed(ModelSpec(id="deployed", kind="upstream", location=upstream))
    registry.add(ModelSpec(id="fine-tuned", kind="upstream", location=upstream))
    await loading
    try:
        assert {"u0", "u1", "u2"} <= registry.engines.keys() and registry.ready, registry.failures
        assert "deployed" not in registry.engines and "fine-tuned" not in registry.engines  # they load themselves
    finally:
        await registry.close()


def test_a_model_the_default_openvino_engine_cannot_load_is_served_by_transformers(tiny, tmp_path):
    (tmp_path / "openvino").write_text("not a folder")  # the IR cache cannot be made: the export fails
    specs = [ModelSpec(id="tiny", kind="local", location=str(tiny))]
    fallback = ModelRegistry(specs, tmp_path, backend="openvino")
    asyncio.run(fallback.load_all())
    try:
        assert fallback.ready, fallback.failures
        assert fallback.engines["tiny"].info.meta.get("backend") != "openvino"
    finally:
        asyncio.run(fallback.close())
    # Named for the model, the openvino engine is what it gets, or its load fails with the reason.
    named = ModelRegistry([ModelSpec(id="tiny", kind="local", location=str(tiny), backend="openvino")], tmp_path)
    asyncio.run(named.load_all())
    assert "tiny" in named.failures and not named.engines
