"""`agentd deploy | undeploy | deployments | deploy-adapter | undeploy-adapter` against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import pytest
import typer
from typer.testing import CliRunner

from agentd.config import Settings
from agentd.deploy_cli import register
from agentd.server.app import create_app
from pipelines.registry import ModelRegistry
from tests.conftest import DATA_DIR, RunningServer

pytestmark = pytest.mark.timeout(300)
runner = CliRunner()
app = typer.Typer()
register(app)


@pytest.fixture()
def server(tmp_path):
    # Its own data folder and registry: deployments are recorded there and add engines to it.
    registry = ModelRegistry([], DATA_DIR)
    running = RunningServer(create_app(Settings(data_dir=tmp_path / "state", deployment_check_s=0.2), registry))
    yield running
    running.stop()
    asyncio.run(registry.close())


def cli(server, *args: str):
    return runner.invoke(app, [*args, "--base-url", server.url])


def test_deploy_follows_the_load_then_chat_list_and_undeploy(server, tiny, tmp_path):
    from tests.fixtures.lora_adapter import make_lora_adapter

    adapter = make_lora_adapter(tiny, tmp_path / "tiny-lora")
    deployed = cli(server, "deploy", str(tiny), "--engine", "embedded", "--name", "tiny-chat",
                   "--adapter", f"support={adapter}", "--keep-alive", "5m")
    assert deployed.exit_code == 0, deployed.output
    deployment_id = re.search(r"deployment (dep-[0-9a-f]{12}): pending", deployed.output).group(1)
    events = re.findall(r"\d\d:\d\d:\d\d (\w+) ", deployed.output)  # (the server's stderr is mixed in)
    assert events == ["created", "loading", "ready"], deployed.output  # the load as it happened
    assert "ready: chat with model 'tiny-chat'" in deployed.output
    assert "adapter 'support'" in deployed.output
    hint = deployed.output.split("try: ", 1)[1].strip()
    assert hint.startswith(f"curl {server.url}/v1/chat/completions") and '"model": "tiny-chat"' in hint

    client = server.client()
    for model in ("tiny-chat", "support"):  # both ids answer, as the command said
        reply = client.chat.completions.create(model=model, max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
        assert reply.model == model and reply.usage.completion_tokens > 0
    parents = {m.id: m.model_extra.get("parent") for m in client.models.list()}
    assert parents["support"] == "tiny-chat"

    listed = cli(server, "deployments")
    assert listed.exit_code == 0, listed.output
    assert deployment_id in listed.output and "tiny-chat" in listed.output and "ready" in listed.output
    assert "in 4m" in listed.output or "in 5m" in listed.output  # keep_alive's expiry
    [entry] = json.loads(cli(server, "deployments", "--json").output)
    assert entry["id"] == deployment_id and entry["adapters"] == [{"id": "support", "path": str(adapter)}]

    not_whole = cli(server, "undeploy", "support")  # an adapter's id: says how to remove just it
    assert not_whole.exit_code == 1 and f"undeploy-adapter {deployment_id} support" in not_whole.output
    removed = cli(server, "undeploy-adapter", "tiny-chat", "support")
    assert removed.exit_code == 0 and "adapter support removed" in removed.output
    added = cli(server, "deploy-adapter", deployment_id, str(adapter))
    assert added.exit_code == 0 and "adapter tiny-lora ready" in added.output, added.output

    stopped = cli(server, "undeploy", "tiny-chat")  # by the model id it serves
    assert stopped.exit_code == 0 and f"deployment {deployment_id} (tiny-chat): stopped" in stopped.output
    assert "tiny-chat" not in {m.id for m in client.models.list()}
    assert "no deployments running" in cli(server, "deployments").output
    assert deployment_id in cli(server, "deployments", "--all").output


def test_no_wait_returns_at_once_and_refusals_exit_1_with_the_servers_message(server, tiny):
    started = cli(server, "deploy", str(tiny), "--engine", "embedded", "--no-wait")
    assert started.exit_code == 0 and re.fullmatch(r"deployment dep-[0-9a-f]{12}: pending on embedded\n",
                                                   started.output), started.output

    unknown = cli(server, "deploy", "no-such-model")
    assert unknown.exit_code == 1 and "404: The model `no-such-model` does not exist" in unknown.output
    assert "Traceback" not in unknown.output
    bad_keep_alive = cli(server, "deploy", str(tiny), "--keep-alive", "soon")
    assert bad_keep_alive.exit_code == 1 and "keep_alive" in bad_keep_alive.output
    missing = cli(server, "undeploy", "dep-000000000000")
    assert missing.exit_code == 1 and "no deployment with id" in missing.output
    nothing = cli(server, "undeploy", "nobody")
    assert nothing.exit_code == 1 and "no running deployment with id or model 'nobody'" in nothing.output
    bad_arg = cli(server, "deploy", str(tiny), "--engine-arg", "no-equals-sign")
    assert bad_arg.exit_code == 2 and "KEY=VALUE" in bad_arg.output


def test_a_launch_that_fails_exits_1_naming_the_failure(server, tiny, tmp_path):
    broken = tmp_path / "broken"  # a config and no weights: validation passes, loading fails
    broken.mkdir()
    (broken / "config.json").write_text((tiny / "config.json").read_text())
    result = cli(server, "deploy", str(broken), "--engine", "embedded")
    assert result.exit_code == 1, result.output
    assert re.search(r"\d\d:\d\d:\d\d failed ", result.output)  # the event, as it came
    assert re.search(r"deployment dep-[0-9a-f]{12} is failed: ", result.output) and "Traceback" not in result.output
    assert "failed" in cli(server, "deployments").output


def test_an_unreachable_server_is_one_line_not_a_traceback():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = runner.invoke(app, ["deployments", "--base-url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1 and f"cannot reach agentd at http://127.0.0.1:{port}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
