"""The tool-use adapter's training data: valid under the agents' own constraints, seeded, and built
from the tools the server really offers."""

from __future__ import annotations

import functools
import json

import pytest

from agentd.agents.context import FINAL_ANSWER
from agentd.agents.grounding import RunReading
from agentd.agents.rewoo import plan_schema
from agentd.llm.chat_model import parse_json, step_schema
from agentd.tool_use.chain_scenarios import THEN
from agentd.tool_use.data import SECOND_STAGE_MIX, episodes, requests, server_tools, trained_requests, training_rows
from agentd.tool_use.media_scenarios import CUSTOM_TOOLS, _definition
from tools.builtin.calculator import evaluate


@pytest.fixture(scope="module")
def tools():
    return server_tools()


@pytest.fixture(scope="module")
def rows(tools):
    return training_rows(300, seed=3, tools=tools)


@pytest.fixture(scope="module")
def second_stage_rows(tools):
    return training_rows(150, seed=4, tools=tools, mix=SECOND_STAGE_MIX)


@pytest.mark.parametrize("stage", ["rows", "second_stage_rows"])
def test_every_trained_step_is_what_the_constrained_agent_may_write(tools, stage, request):
    """Against the schemas the agent's grammar has at that point of the run: pictures, ids, optional
    numbers and named choices grounded in what it read (a bare file id in the data is a picture the person uploaded, or a
    data set)."""
    rows = request.getfixturevalue(stage)
    everything = tools + [_definition(name) for name in CUSTOM_TOOLS]

    @functools.cache
    def schemas(read: tuple[tuple[str, bool], ...]) -> tuple[dict, dict]:
        reading = RunReading()
        for text, by_person in read:
            reading.learn(text, lambda file_id: "image", by_person)
        grounded = [reading.definition(t) for t in everything]
        return step_schema(grounded + [FINAL_ANSWER], max_calls=3), plan_schema(grounded, max_steps=6)

    kinds = set()
    for row in rows:
        kinds.add(row["kind"].split("/")[0])
        # Two requests joined whose calls take one same option, with it and without ("including stopped ones,
        # which deployments have there been, then list the live endpoints"; "evaluate A on 40 questions, next
        # compare B with C"): what the person surely said is read for the whole request, so both calls would
        # be written with it. Their other arguments are still checked.
        asks_twice = row["kind"].endswith("chain/composed") and _two_calls_share_an_option(row, everything)
        read: list[tuple[str, bool]] = []
        for message in row["messages"]:
            if message["role"] != "assistant":
                # The person's turns; a tool's result is a user turn too in the format the model reads.
                by_person = message["role"] == "user" and not message["content"].startswith("Result of ")
                read.append((message["content"], by_person and not asks_twice))
            if message["role"] != "assistant" or message.get("weight") == 0:
                continue
            step, plan = schemas(tuple(read))
            if row["kind"].startswith("react/"):
                parse_json(message["content"], step)
            elif row["kind"].startswith("plan/"):
                parse_json(message["content"], plan)
    assert kinds == {"react", "plan", "solve"}


def _two_calls_share_an_option(row: dict, definitions: list[dict]) -> bool:
    options = {d["function"]["name"]: set(d["function"]["parameters"].get("properties", {}))
               - set(d["function"]["parameters"].get("required", ())) for d in definitions}
    called = []
    for message in row["messages"]:
        if message["role"] == "assistant" and message["content"].startswith("{"):
            step = json.loads(message["content"])
            called += [c["name"] for c in step.get("tool_calls", [])] + [s["tool"] for s in step.get("steps", [])]
    called = [name for name in called if name != "final_answer"]
    return any(options.get(a, set()) & options.get(b, set()) for i, a in enumerate(called) for b in called[i + 1:])


def test_the_listing_names_every_server_tool_and_no_description(tools, rows):
    names = [t["function"]["name"] for t in tools]
    system = next(r["messages"][0]["content"] for r in rows
                  if r["kind"].startswith("react/") and "get_weather" not in r["messages"][0]["content"]
                  and all(name in r["messages"][0]["content"] for name in names))
    assert f"Tools: {', '.join(names)}\n" in system
    assert "Evaluate an arithmetic expression" not in system  # known tools are named, not described


def test_arithmetic_steps_compute_what_the_answer_says(rows):
    checked = 0
    for episode in episodes(200, seed=5):
        for call in episode.calls:
            if call.tool == "calculator" and not call.wrong:
                assert float(evaluate(call.arguments["expression"])) == pytest.approx(float(call.observation))
                checked += 1
    assert checked > 20


def test_chained_calls_take_their_arguments_from_earlier_results():
    chains = [e for e in episodes(400, seed=7) if e.kind == "finetune_chain"]
    assert chains
    for episode in chains:
        made = json.loads(episode.calls[0].observation)["fine_tuned_model"]
        assert episode.calls[1].arguments["model"] == made
        assert episode.calls[1].planned["model"] == "#E1.fine_tuned_model"


def test_two_requests_said_as_one_make_both_calls_in_the_order_said():
    composed = [e for e in episodes(400, seed=11, mix=SECOND_STAGE_MIX) if e.kind == "chain/composed"]
    assert len(composed) > 30
    tools = set()
    for episode in composed:
        first, second = episode.calls
        assert any(joint in episode.request for joint in THEN)
        assert " " in episode.answer and first.observation and second.observation
        tools.add((first.tool, second.tool))
    assert len(tools) > 20  # any two tools, not a few hand-picked pairs
    plain = episodes(400, seed=11)
    assert not any(e.kind == "chain/composed" for e in plain)  # the first stage's mix is as it was


def test_the_requests_an_adapter_was_trained_on_cover_both_its_stages():
    first = {"seed": 2, "episodes": 30}
    second = {"seed": 3, "episodes": 20, "mix": "second stage", "continued_from": first}
    assert trained_requests(first) == requests(2, 30)
    assert trained_requests(second) == requests(2, 30) + requests(3, 20, SECOND_STAGE_MIX)


def test_the_follow_up_deploys_the_model_the_comparison_named(rows):
    follow_ups = [r for r in rows if r["kind"] == "react/deploy_better"]
    assert follow_ups
    for row in follow_ups:
        texts = [m["content"] for m in row["messages"]]
        deploy = json.loads(next(t for t in texts if '"name": "deploy"' in t))["tool_calls"][0]["arguments"]["model"]
        assert any(f'"better": "{deploy}"' in t or t.startswith(deploy) for t in texts[:-3])


def test_generation_is_seeded(tools):
    assert training_rows(20, seed=1, tools=tools) == training_rows(20, seed=1, tools=tools)
    assert requests(seed=1, count=50) == requests(seed=1, count=50)
    assert requests(seed=1, count=50) != requests(seed=2, count=50)


def test_fine_tuned_model_ids_end_with_their_jobs_prefix_as_the_real_service_names_them():
    from agentd.jobs.fine_tune import parse_model_id

    seen = 0
    for episode in episodes(400, seed=11):
        for call in episode.calls:
            try:
                result = json.loads(call.observation)
            except ValueError:
                continue
            if not isinstance(result, dict):
                continue
            job, model = result.get("job_id") or result.get("fine_tune_job"), result.get("fine_tuned_model") \
                or result.get("tuned_model")
            if isinstance(job, str) and job.startswith("ftjob-") and model:
                assert parse_model_id(model)[0] == job[:len("ftjob-") + 8], (job, model)
                seen += 1
    assert seen > 20


def test_a_mended_mistake_is_shown_but_never_trained(tools):
    rows = [r for r in training_rows(300, seed=11, tools=tools) if r["kind"].startswith("react/recovery/")]
    assert rows
    for row in rows:
        steps = [m for m in row["messages"] if m["role"] == "assistant"]
        mistake, fix = steps[0], steps[1]
        assert mistake.get("weight") == 0 and fix.get("weight") is None
        after = row["messages"][row["messages"].index(mistake) + 1]["content"]
        assert after.startswith("Result of ") and "Error (" in after  # the real tools' error text follows it
        assert json.loads(mistake["content"])["tool_calls"] != json.loads(fix["content"])["tool_calls"]


def test_requests_that_need_no_tool_plan_nothing(tools):
    rows = training_rows(300, seed=12, tools=tools)
    empty = [r for r in rows if r["kind"] == "plan/no_tool"]
    assert empty and all(json.loads(r["messages"][-1]["content"]) == {"steps": []} for r in empty)


def test_python_programs_use_the_requests_values_and_report_what_the_real_tool_prints():
    import random
    import re

    from agentd.tool_use.scenarios import python_instruction
    from tools.sandbox import run_python

    rng = random.Random(5)
    for index in range(60):
        episode = python_instruction(rng)
        code = episode.calls[0].arguments["code"]
        for literal in set(re.findall(r"\[[\d, ]+\]|'[a-z]{4,}'", code)) - {"'aeiou'"}:
            assert literal.strip("'") in episode.request, (episode.request, code)
        if index % 12 == 0:  # the sandbox's own output, not only this process's exec
            assert json.loads(episode.calls[0].observation) == [f"stdout:\n{run_python(code).stdout.rstrip()}"]


def test_data_written_on_one_machine_trains_on_another_unchanged(tmp_path):
    """`build --write-rows` then `build --rows` elsewhere (a GPU machine without the tool registry's
    dependencies) must train on exactly the rows, kinds and tool names `build --episodes` would."""
    from agentd.tool_use.build import make_rows, read_data, write_data

    made = make_rows(12, seed=3)
    write_data(made, tmp_path / "data")
    assert read_data(tmp_path / "data") == made
    assert made["episodes"] == 12 and made["seed"] == 3 and "tune_and_evaluate" in made["tools"]


def test_the_router_is_fitted_on_the_adapter_s_own_data_and_recorded_in_its_manifest(tmp_path):
    from agentd.tool_use.build import build_router, make_rows
    from agentd.tool_use.router import ToolRouter

    data = make_rows(40, seed=5)
    (tmp_path / "manifest.json").write_text(json.dumps({"episodes": 40, "seed": 5}))
    manifest = build_router(data, tmp_path)
    assert manifest["router"]["pairs"] > 40 and manifest["router"]["mass"] in (0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
    router = ToolRouter.load(tmp_path)
    assert set(router.labels) <= set(data["tools"]) | {"final_answer"} and "calculator" in router.labels
    assert json.loads((tmp_path / "manifest.json").read_text())["router"] == manifest["router"]
    # A router fitted on other data than the adapter's would not match what the adapter learned.
    (tmp_path / "manifest.json").write_text(json.dumps({"episodes": 4000, "seed": 0}))
    with pytest.raises(SystemExit, match="same data"):
        build_router(data, tmp_path)
    # A second stage keeps the router of the first, whose data it was fitted on.
    (tmp_path / "manifest.json").write_text(json.dumps({"episodes": 20, "seed": 9, "continued_from": {"episodes": 40, "seed": 5}}))
    assert build_router(data, tmp_path)["router"]["pairs"] > 40
