"""The deployments service on the embedded engine: launch, adapters, keep_alive, restart recovery, failures."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from agentd.deployments import DeploymentError, DeploymentService, parse_keep_alive
from pipelines.registry import ModelRegistry, ModelSpec
from tests.conftest import DATA_DIR
from tests.fixtures.lora_adapter import make_lora_adapter


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory) -> Path:
    return make_lora_adapter(tiny, tmp_path_factory.mktemp("lora") / "tiny-lora")


@pytest.fixture()
def registry_here() -> ModelRegistry:
    """A registry of no startup models: deployments add theirs (the embedded weights come from DATA_DIR)."""
    return ModelRegistry([], DATA_DIR)


async def first_logprobs(registry: ModelRegistry, model_id: str) -> list[float]:
    from pipelines.engine import GenerationRequest, SamplingParams

    lease = await registry.lease(model_id)
    try:
        request = GenerationRequest(prompt="Hello there", params=SamplingParams(max_tokens=3, temperature=0.0,
                                                                                logprobs=0))
        logprobs = []
        async for delta in lease.engine.stream(request):
            logprobs += [entry.logprob for entry in (delta.logprobs or [])]
        return logprobs
    finally:
        lease.release()


async def test_a_local_model_with_an_adapter_is_served_and_the_adapter_changes_its_outputs(
        tiny, adapter, registry_here, tmp_path):
    service = DeploymentService(tmp_path, registry_here, check_s=60)
    await service.start()
    try:
        created = await service.create(model=str(tiny), name="tiny", adapters=[{"name": "tiny-lora",
                                                                                "path": str(adapter)}])
        assert created.status == "pending" and created.engine == "embedded" and created.id.startswith("dep-")
        ready = await service.wait(created.id, timeout=60)
        assert ready.status == "ready", ready.error
        assert ready.memory_bytes and ready.memory_bytes > 0
        assert registry_here.specs["tiny-lora"].parent == "tiny" and service.parent_of("tiny") is None
        base, tuned = await first_logprobs(registry_here, "tiny"), await first_logprobs(registry_here, "tiny-lora")
        assert base and tuned and base != tuned
        assert service.get(created.id).last_used_at is not None

        removed = await service.remove_adapter(created.id, "tiny-lora")
        assert removed.adapters == {} and "tiny-lora" not in registry_here.specs
        again = await service.add_adapter(created.id, str(adapter))  # a folder: served under its name
        assert again.adapters == {"tiny-lora": str(adapter.resolve())}
        assert await first_logprobs(registry_here, "tiny-lora") == tuned
        types = [event["type"] for event in service.events(created.id)]
        assert types[:3] == ["created", "loading", "ready"] and types[-2:] == ["adapter_removed", "adapter_added"]

        stopped = await service.delete(created.id)
        assert stopped.status == "stopped" and not {"tiny", "tiny-lora"} & set(registry_here.specs)
        assert not {"tiny", "tiny-lora"} & set(registry_here.engines)
        assert service.list() == [] and [d.id for d in service.list(include_stopped=True)] == [created.id]
    finally:
        await service.close()


async def test_an_idle_deployment_expires_but_not_while_a_request_holds_it(tiny, registry_here, tmp_path):
    service = DeploymentService(tmp_path, registry_here, check_s=0.1)
    await service.start()
    try:
        created = await service.create(model=str(tiny), name="brief", keep_alive="1s")
        ready = await service.wait(created.id, timeout=60)
        assert ready.status == "ready" and ready.keep_alive_s == 1.0 and ready.expires_at() is not None
        lease = await registry_here.lease("brief")  # a request in flight is use
        await asyncio.sleep(2.0)
        assert service.get(created.id).status == "ready"
        lease.release()
        started = time.monotonic()
        while service.get(created.id).status != "stopped":
            assert time.monotonic() - started < 10, "the deployment never expired"
            await asyncio.sleep(0.1)
        assert time.monotonic() - started >= 0.5  # idle time counts from the end of the request
        assert service.events(created.id)[-1]["type"] == "expired"
        assert "brief" not in registry_here.specs and "brief" not in registry_here.engines
    finally:
        await service.close()


async def test_a_restarted_service_brings_its_deployments_back(tiny, adapter, registry_here, tmp_path):
    first = DeploymentService(tmp_path, registry_here, check_s=60)
    await first.start()
    created = await first.create(model=str(tiny), name="durable", adapters=[str(adapter)])
    assert (await first.wait(created.id, timeout=60)).status == "ready"
    await first.close()  # a server shutdown: engines freed, records kept as they were
    assert "durable" not in registry_here.engines and "durable" not in registry_here.specs

    fresh = ModelRegistry([], DATA_DIR)
    second = DeploymentService(tmp_path, fresh, check_s=60)
    await second.start()
    try:
        back = await second.wait(created.id, timeout=60)
        assert back.status == "ready" and back.adapters == {"tiny-lora": str(adapter.resolve())}
        assert {"durable", "tiny-lora"} <= set(fresh.engines) and fresh.specs["tiny-lora"].parent == "durable"
        assert "recovering" in [event["type"] for event in second.events(created.id)]
    finally:
        await second.close()
        await fresh.close()


async def test_a_failed_launch_frees_what_it_took_and_says_why(tiny, registry_here, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(tiny / "config.json", broken / "config.json")  # a config but no weights nor tokenizer
    service = DeploymentService(tmp_path / "data", registry_here, check_s=60)
    await service.start()
    try:
        failed = await service.wait((await service.create(model=str(broken))).id, timeout=60)
        assert failed.status == "failed" and failed.error
        assert "broken" not in registry_here.specs and "broken" not in registry_here.engines
        assert service.events(failed.id)[-1]["type"] == "failed"
        events = [event async for event in service.follow(failed.id)]  # replays, then ends: terminal
        assert events[-1]["type"] == "failed"
    finally:
        await service.close()


async def test_a_fine_tuned_id_resolves_to_its_base_plus_adapter(tiny, adapter, registry_here, tmp_path):
    fine_tune = ModelSpec(id="ft:tiny:acme::abc123", kind="local", location=str(tiny), adapter=str(adapter))
    service = DeploymentService(tmp_path, registry_here, check_s=60,
                                resolve=lambda model_id: fine_tune if model_id == fine_tune.id else None)
    await service.start()
    try:
        merged = await service.wait((await service.create(model=fine_tune.id)).id, timeout=60)
        assert merged.status == "ready" and merged.served_id == fine_tune.id
        assert registry_here.specs[fine_tune.id].adapter == str(adapter)
        with pytest.raises(DeploymentError) as refused:  # on the embedded engine adapters go on a base
            await service.add_adapter(merged.id, str(adapter))
        assert refused.value.status == 400
        await service.delete(merged.id)
        base = await service.wait((await service.create(model=str(tiny), name="base",
                                                        adapters=[fine_tune.id])).id, timeout=60)
        assert base.status == "ready", base.error
        assert base.adapters == {fine_tune.id: str(adapter)} and registry_here.specs[fine_tune.id].parent == "base"
    finally:
        await service.close()


async def test_requests_that_cannot_be_deployed_are_refused_before_anything_is_recorded(
        tiny, adapter, registry_here, tmp_path):
    service = DeploymentService(tmp_path, registry_here, vllm_python=tmp_path / "no-venv" / "python", check_s=60)
    await service.start()

    async def refused(**request) -> DeploymentError:
        with pytest.raises(DeploymentError) as error:
            await service.create(**request)
        return error.value

    try:
        unknown = await refused(model="no-such-model")
        assert (unknown.status, unknown.code, unknown.param) == (404, "model_not_found", "model")
        assert "embedded" in unknown.message
        assert (await refused(model=str(tiny), engine="gpu")).param == "engine"
        assert (await refused(model=str(tiny), keep_alive="forever")).param == "keep_alive"
        assert (await refused(model=str(tiny), dtype="int3")).param == "dtype"
        assert (await refused(model=str(tiny), max_model_len=0)).param == "max_model_len"
        assert (await refused(model=str(tiny), engine_args={"Bad Flag": 1})).param == "engine_args"
        reserved = await refused(model=str(tiny), engine_args={"port": 1})  # agentd sets it: refused before launch
        assert reserved.param == "engine_args" and "set by agentd" in reserved.message
        vllm = await refused(model=str(tiny), engine="vllm")
        assert vllm.status == 400 and "make vllm" in vllm.message and vllm.code == "vllm_unavailable"
        not_adapter = await refused(model=str(tiny), name="t", adapters=[str(tiny)])
        assert (not_adapter.status, not_adapter.code) == (400, "not_an_adapter")
        missing = await refused(model=str(tiny), name="t", adapters=["/nowhere/lora"])
        assert (missing.status, missing.code) == (404, "adapter_not_found")
        assert (await refused(model="agentd-react")).status == 404
        assert (await refused(model=str(tiny), name="agentd-react")).status == 409
        assert service.list(include_stopped=True) == []

        live = await service.create(model=str(tiny), name="taken")
        taken = await refused(model=str(tiny), name="taken")
        assert (taken.status, taken.code) == (409, "model_already_served") and "`name`" in taken.message
        with pytest.raises(DeploymentError) as not_ready:  # still pending
            await service.add_adapter(live.id, str(adapter))
        assert not_ready.value.status == 409
        await service.wait(live.id, timeout=60)
        with pytest.raises(DeploymentError) as no_adapter:
            await service.remove_adapter(live.id, "nothing")
        assert (no_adapter.value.status, no_adapter.value.code) == (404, "adapter_not_found")
        await service.delete(live.id)
        with pytest.raises(DeploymentError) as gone:
            service.get("dep-000000000000")
        assert (gone.value.status, gone.value.code) == (404, "deployment_not_found")
    finally:
        await service.close()


def test_keep_alive_takes_seconds_and_durations():
    assert parse_keep_alive(None) is None and parse_keep_alive(-1) is None
    assert parse_keep_alive(90) == 90.0 and parse_keep_alive("30s") == 30.0
    assert parse_keep_alive("5m") == 300.0 and parse_keep_alive("1h") == 3600.0 and parse_keep_alive("250ms") == 0.25
    for bad in ("soon", "5 minutes", 0, True, float("nan")):
        with pytest.raises(DeploymentError):
            parse_keep_alive(bad)


def test_a_vllm_left_running_by_a_killed_server_is_reaped_and_nothing_else(tmp_path):
    import subprocess
    import sys

    import psutil

    from agentd.deployments.vllm import reap_orphan

    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    orphan = subprocess.Popen([*sleeper, "vllm.entrypoints.openai.api_server"], start_new_session=True)
    bystander = subprocess.Popen(sleeper, start_new_session=True)
    try:
        assert reap_orphan(orphan.pid) is True
        assert orphan.wait(10) is not None
        assert reap_orphan(bystander.pid) is False and bystander.poll() is None  # a reused pid is not ours
        assert reap_orphan(orphan.pid) is False  # gone already
    finally:
        for process in (orphan, bystander):
            process.kill()
            process.wait()
    assert not psutil.pid_exists(bystander.pid) or psutil.Process(bystander.pid).status() == psutil.STATUS_ZOMBIE


def test_engine_arg_values_cannot_smuggle_in_the_flags_agentd_sets():
    from agentd.deployments.vllm import engine_flags

    assert engine_flags({"seed": -1, "allowed_origins": ["a", "b"]}) == [
        "--seed", "-1", "--allowed-origins", "a", "b"]
    # argparse reads a value like "--host" as the next flag: the last --host wins over agentd's own.
    for smuggled in (["x", "--host", "0.0.0.0"], "--port=1", ["-p", "1"]):
        with pytest.raises(ValueError, match="would be read as a flag"):
            engine_flags({"allowed_origins": smuggled})


async def test_an_adapter_is_not_removed_from_a_deployment_still_launching(tiny, adapter, registry_here, tmp_path):
    service = DeploymentService(tmp_path, registry_here, check_s=60)
    await service.start()
    try:
        created = await service.create(model=str(tiny), name="busy", adapters=[str(adapter)])
        with pytest.raises(DeploymentError) as refused:  # its runner is loading the adapter right now
            await service.remove_adapter(created.id, "tiny-lora")
        assert (refused.value.status, refused.value.code) == (409, "deployment_not_ready")
        ready = await service.wait(created.id, timeout=60)
        assert ready.status == "ready" and ready.adapters == {"tiny-lora": str(adapter.resolve())}
    finally:
        await service.close()


async def test_a_vllm_server_still_starting_is_recorded_so_a_killed_agentd_reaps_it(tiny, registry_here, tmp_path):
    import psutil

    from agentd.deployments.vllm import reap_orphan

    # A "vLLM" that never answers /health: the deployment stays loading, as a real one does for minutes.
    fake = fake_vllm_python(tmp_path, '-c "import time; time.sleep(120)"')
    service = DeploymentService(tmp_path, registry_here, vllm_python=fake, check_s=60)
    await service.start()
    try:
        created = await service.create(model=str(tiny), name="slow", engine="vllm")
        started = time.monotonic()
        while service.get(created.id).pid is None:
            assert time.monotonic() - started < 10, "the vLLM process never started"
            await asyncio.sleep(0.05)
        recorded = service.store.get(created.id)  # what a restarted agentd reads after a kill -9
        assert recorded.status == "loading" and recorded.pid == service.get(created.id).pid
        assert reap_orphan(recorded.pid) is True
        assert not psutil.pid_exists(recorded.pid) or psutil.Process(recorded.pid).status() == psutil.STATUS_ZOMBIE
    finally:
        await service.close()


FAKE_VLLM = '''
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # /health
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()

    def do_POST(self):  # loading an adapter works, unloading one fails, as with a vLLM mid-crash
        code = 500 if "unload" in self.path else 200
        self.send_response(code); self.send_header("Content-Length", "0"); self.end_headers()

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


async def test_an_adapter_vllm_fails_to_unload_still_leaves_the_deployment_consistent(
        tiny, adapter, registry_here, tmp_path):

    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_VLLM)
    fake = fake_vllm_python(tmp_path, str(script))
    service = DeploymentService(tmp_path, registry_here, vllm_python=fake, check_s=60)
    await service.start()
    try:
        created = await service.create(model=str(tiny), name="upstream", engine="vllm", adapters=[str(adapter)])
        assert (await service.wait(created.id, timeout=30)).status == "ready"
        removed = await service.remove_adapter(created.id, "tiny-lora")  # not a 500: agentd no longer serves it
        assert removed.adapters == {} and "tiny-lora" not in registry_here.specs
        assert "vLLM did not unload it" in service.events(created.id)[-1]["message"]
        assert "tiny-lora" not in service._runners[created.id].server.adapters  # nor back after a restart
    finally:
        await service.close()


def fake_vllm_python(tmp_path: Path, program: str) -> Path:
    """A stand-in for the vLLM venv's python: runs `program` (a script or `-c "…"`) with vLLM's arguments."""
    import stat
    import sys

    fake = tmp_path / "fake-vllm" / "python"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} {program} "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake
