"""The shipped tool-use adapter: small, trained on every tool the server offers, used by agents on
the embedded model by default (a setting turns it off), and it makes the right call."""

from __future__ import annotations

import httpx

from agentd.config import Settings
from agentd.server.app import create_app
from agentd.tool_use import ADAPTER_DIR, TOOL_USE_MODEL_ID, manifest
from pipelines.embedded import EMBEDDED_MODEL_ID
from tools.builtin.calculator import evaluate


def test_the_adapter_ships_small_and_knows_every_tool_the_server_offers(tmp_path):
    found = manifest()
    assert found is not None, f"no adapter in {ADAPTER_DIR}: run python -m agentd.tool_use.build"
    assert (ADAPTER_DIR / "adapter_model.safetensors").stat().st_size <= 10 * 2**20
    app = create_app(Settings(data_dir=tmp_path))
    # A tool added to the server without rebuilding the adapter would be described, not known.
    assert set(app.state.tools.names) <= set(found["tools"]), set(app.state.tools.names) - set(found["tools"])
    app.state.tools.close()


def test_agents_on_the_embedded_model_use_it_unless_told_not_to(tmp_path):
    default = create_app(Settings(data_dir=tmp_path / "a"))
    assert default.state.agents.model_id == TOOL_USE_MODEL_ID
    spec = default.state.registry.specs[TOOL_USE_MODEL_ID]
    assert spec.adapter == str(ADAPTER_DIR) and spec.parent == EMBEDDED_MODEL_ID
    off = create_app(Settings(data_dir=tmp_path / "b", tool_use_adapter=False))
    assert off.state.agents.model_id == EMBEDDED_MODEL_ID and TOOL_USE_MODEL_ID not in off.state.registry.specs
    for app in (default, off):
        app.state.tools.close()


def test_an_unseen_request_gets_the_right_call_from_the_adapter(client, server):
    """A word problem in a wording that is neither in its training data nor in the benchmark,
    answered by the real model through its adapter: it picks the calculator and answers with the
    number the calculator returned. (Which numbers it multiplies is not checked: on this wording
    the 135M model has been seen to write `377 * 377`.)"""
    reply = client.with_options(timeout=600).chat.completions.create(
        model="agentd-react", messages=[{"role": "user", "content": "Our warehouse has 4821 crates of 377 bolts each. "
                                                                    "How many bolts is that?"}])
    steps = reply.choices[0].message.model_extra["agent_steps"]
    call = next(s for s in steps if s["type"] == "tool_call")
    assert call["name"] == "calculator" and evaluate(call["arguments"]["expression"]) > 0
    observed = next(s for s in steps if s["type"] == "observation")["content"]
    assert observed in reply.choices[0].message.content
    run = httpx.get(f"{server.url}/v1/runs/{reply.model_extra['run_id']}").json()
    assert run["model"] == TOOL_USE_MODEL_ID
