"""The agent benchmark (benchmarks/agent_tasks): its requests, its model-free scorer, its stand-in
services, and that its phrasings stay out of the tool-use adapter's training data."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from agentd.agents.steps import FinalAnswer, Observation, Step, ToolCallStep
from agentd.config import Settings
from agentd.llm.chat_model import ToolCall
from agentd.server.app import create_app
from pipelines.embedded import EMBEDDED_MODEL_ID

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "agent_tasks"
sys.path.insert(0, str(BENCHMARK))

from score import check_argument, fill, score, sequences  # noqa: E402
from world import prepare  # noqa: E402

TASKS = [json.loads(line) for line in (BENCHMARK / "tasks.jsonl").read_text().splitlines() if line.strip()]
NEW_KINDS = {"finetune", "evaluate", "compare", "deploy", "jobs", "vision", "image_generation", "workflow",
             "chain", "direct"}


@pytest.fixture(scope="module")
def server_tools(tmp_path_factory):
    """The tool registry the server builds (agentd/server/app.py), names and arguments as served."""
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("server")))
    yield app.state.tools
    app.state.tools.close()


@pytest.fixture()
async def world(tmp_path):
    made = await prepare(tmp_path)
    yield made
    made.close()


# -- the tasks file ---------------------------------------------------------------------------------


def test_the_benchmark_has_at_least_120_requests_of_every_kind():
    assert len(TASKS) >= 120
    assert len({task["id"] for task in TASKS}) == len(TASKS)
    kinds = {task["category"] for task in TASKS}
    assert NEW_KINDS <= kinds
    assert sum(task["category"] in NEW_KINDS for task in TASKS) >= 60
    assert sum(not task["expect"] for task in TASKS) >= 3  # requests that need no tool
    assert all(task["request"].strip() and isinstance(task["expect"], list) for task in TASKS)


def test_every_expected_tool_and_argument_is_served(server_tools):
    for task in TASKS:
        for sequence in sequences(task):
            for step in sequence:
                for name in step["tool"] if isinstance(step["tool"], list) else [step["tool"]]:
                    assert name in server_tools, f"{task['id']}: no tool {name!r} in the server's registry"
                    accepted = set(server_tools.get(name).parameters.get("properties", {}))
                    unknown = set(step.get("args", {})) - accepted
                    assert not unknown, f"{task['id']}: {name} has no argument(s) {sorted(unknown)}"


async def test_every_placeholder_is_made_by_the_world(world):
    for task in TASKS:
        text = json.dumps(task)
        for name in re.findall(r"\{(\w+)\}", text):
            assert name in world.placeholders, f"{task['id']}: nothing fills {{{name}}}"


async def test_the_expected_calls_solve_each_task_against_the_real_tools(world):
    """Runs each task's expected calls for real (tools on the stand-in services), with arguments
    taken from its checks and from the earlier observations: the scorer must call that solved.
    This catches a task whose checks no correct run can meet (a face the detector misses, a model
    the services refuse, an argument the schema rejects)."""
    checked = 0
    for task in TASKS:
        steps = await _ideal_run(task, world)
        if steps is None:
            continue
        if task.get("answer_contains"):
            steps.append(FinalAnswer(" ".join(o if isinstance(o, str) else o[0] for o in task["answer_contains"])))
        assert score(task, steps, world.tools, world.placeholders)["solved"], (task["id"], [s.to_dict() for s in steps])
        assert score(task, steps, world.tools, world.placeholders)["valid_calls"] == len(task["expect"])
        checked += 1
    assert checked >= 70


async def _ideal_run(task: dict, world) -> list[Step] | None:
    """The expected calls made for real; None when a check cannot be turned into a value here
    (calculator expressions, python code, search queries: the older tasks)."""
    expected = fill(task["expect"], world.placeholders)
    if not expected:
        return [FinalAnswer("Hello, I can help with that.")]
    if any({"value", "query_any"} & set(step) or "args" not in step and step["tool"] == "python" for step in expected):
        return None
    steps: list[Step] = []
    for index, step in enumerate(expected):
        tool = world.tools.get(step["tool"])
        arguments = {name: _witness(check, steps) for name, check in step.get("args", {}).items()}
        for name, value in arguments.items():  # "contains" on a list argument: a list holding it
            if isinstance(value, str) and tool.parameters["properties"][name].get("type") == "array":
                arguments[name] = [value]
        for name in tool.parameters.get("required", []):
            if name not in arguments:
                arguments[name] = _REQUIRED_DEFAULTS[name](world)
        call = ToolCall(id=f"call-{index}", name=step["tool"], arguments=arguments)
        result = await world.tools.invoke(call.name, arguments)
        steps += [ToolCallStep(call), Observation(call.id, call.name, result.observation(), is_error=not result.ok)]
    return steps


_REQUIRED_DEFAULTS = {"image": lambda world: world.placeholders["face"],
                      "boxes": lambda world: [{"x": 10, "y": 20, "width": 60, "height": 30}]}


def _witness(check: Any, steps: list[Step]) -> Any:
    """A value that passes `check`."""
    if isinstance(check, dict) and "from" in check:
        calls = [s.call for s in steps if isinstance(s, ToolCallStep)]
        observations = {s.call_id: s for s in steps if isinstance(s, Observation)}
        for call in calls:
            observation = observations[call.id]
            if call.name == check["from"] and not observation.is_error:
                found = _find_key(json.loads(observation.content.splitlines()[0]), check["key"])
                if found is not None:
                    return found
        raise AssertionError(f"no earlier {check['from']} observation holds {check['key']}")
    if isinstance(check, dict) and len(check) == 1:
        kind, wanted = next(iter(check.items()))
        if kind == "contains":  # "smollm2" names the embedded model, which the services know by its id
            piece = wanted if isinstance(wanted, str) else wanted[0]
            return EMBEDDED_MODEL_ID if piece.lower() in EMBEDDED_MODEL_ID else piece
        if kind == "one_of":
            return wanted[0]
        if kind == "number":
            return wanted
        if kind == "present":
            return [{"x": 10, "y": 20, "width": 60, "height": 30}]
        if kind == "any":
            return _witness(wanted[0], steps) if "from" not in wanted[0] or steps else _witness(wanted[1], steps)
        if kind == "all":  # only ever "the tasks list holds each of these names"
            return [_witness(one, steps) for one in wanted]
    return check


def _find_key(document: Any, key: str) -> Any:
    if isinstance(document, dict):
        if key in document:
            return document[key]
        document = list(document.values())
    if isinstance(document, list):
        for item in document:
            found = _find_key(item, key)
            if found is not None:
                return found
    return None


# -- the scorer on hand-made runs ------------------------------------------------------------------


def _call(index: int, name: str, arguments: dict, observation: Any = "ok", error: bool = False) -> list[Step]:
    content = observation if isinstance(observation, str) else json.dumps(observation)
    return [ToolCallStep(ToolCall(id=f"c{index}", name=name, arguments=arguments)),
            Observation(f"c{index}", name, content, is_error=error)]


def _solved(task: dict, steps: list[Step], tools, placeholders: dict | None = None) -> bool:
    return score(task, steps, tools, placeholders)["solved"]


def test_argument_checks():
    assert check_argument("file-1", " file-1 ") and not check_argument("file-1", "file-2")
    assert check_argument(2, 2.0) and check_argument(2, "2") and not check_argument(2, 3)
    assert check_argument(True, True) and not check_argument(True, 1) and not check_argument(False, None)
    assert check_argument({"contains": "smollm2"}, "SmolLM2-135M-Instruct")
    assert check_argument({"contains": ["piqa", "boolq"]}, ["arc_easy", "BoolQ"])
    assert not check_argument({"contains": "smollm2"}, None) and not check_argument({"contains": "x"}, "y")
    assert check_argument({"one_of": [90, -90]}, -90.0) and not check_argument({"one_of": [90, -90]}, 180)
    assert check_argument({"present": True}, [1]) and not check_argument({"present": True}, [])
    assert check_argument({"all": [{"contains": "a"}, {"contains": "b"}]}, ["a", "b"])
    assert not check_argument({"all": [{"contains": "a"}, {"contains": "b"}]}, ["a"])
    assert check_argument({"any": [{"one_of": ["base"]}, {"contains": "smollm2"}]}, "base")


def test_a_later_argument_must_come_from_the_earlier_observation(server_tools):
    task = next(t for t in TASKS if t["id"] == "s01")  # fine-tune, then evaluate the new model on piqa
    tickets = {"tickets": "file-abc"}
    made = {"job_id": "ftjob-1", "status": "succeeded", "fine_tuned_model": "ft:smollm2-135m-instruct:agentd::1234abcd"}
    finetune = _call(0, "finetune", {"model": "smollm2-135m-instruct", "training_file": "file-abc"}, made)
    right = _call(1, "evaluate", {"model": made["fine_tuned_model"], "tasks": ["piqa"]})
    invented = _call(1, "evaluate", {"model": "ft:smollm2-135m-instruct:agentd::99999999", "tasks": ["piqa"]})
    assert _solved(task, finetune + right, server_tools, tickets)
    assert not _solved(task, finetune + invented, server_tools, tickets)
    assert not _solved(task, right + finetune, server_tools, tickets)  # the id cannot come from the future
    failed = _call(0, "finetune", {"model": "smollm2-135m-instruct", "training_file": "file-abc"},
                   json.dumps(made), error=True)
    assert not _solved(task, failed + right, server_tools, tickets)  # an error observation names no model
    assert not _solved(task, finetune + right, server_tools, {"tickets": "file-other"})


def test_the_workflow_counts_as_one_call_or_as_the_steps_by_hand(server_tools):
    task = next(t for t in TASKS if t["id"] == "w01")  # fine-tune smollm2 on {tickets}, did it get better?
    tickets = {"tickets": "file-abc"}
    tuned = "ft:smollm2-135m-instruct:agentd::1234abcd"
    finetune = _call(0, "finetune", {"model": "smollm2", "training_file": "file-abc"}, {"fine_tuned_model": tuned})
    one_call = _call(0, "tune_and_evaluate", {"model": "smollm2-135m-instruct", "training_file": "file-abc"})
    compared = _call(1, "compare_models", {"model_a": tuned, "model_b": "smollm2-135m-instruct", "tasks": ["piqa"]})
    evaluated = (_call(1, "evaluate", {"model": "smollm2-135m-instruct", "tasks": ["piqa"]})
                 + _call(2, "evaluate", {"model": tuned, "tasks": ["piqa"]}))
    assert _solved(task, one_call, server_tools, tickets)
    assert _solved(task, finetune + compared, server_tools, tickets)  # model_a and model_b either way round
    assert _solved(task, finetune + evaluated, server_tools, tickets)
    assert not _solved(task, finetune, server_tools, tickets)  # trained, never checked
    assert not _solved(task, finetune + evaluated[:2], server_tools, tickets)  # only the base was evaluated


def test_requests_that_need_no_tool_and_answer_checks(server_tools):
    direct = next(t for t in TASKS if t["id"] == "n04")  # good morning in French: "bonjour"
    assert _solved(direct, [FinalAnswer("Bonjour !")], server_tools)
    assert not _solved(direct, [FinalAnswer("Good morning!")], server_tools)
    assert not _solved(direct, _call(0, "python", {"code": "print('bonjour')"}) + [FinalAnswer("Bonjour")], server_tools)
    assert not _solved(direct, [], server_tools)
    faces = next(t for t in TASKS if t["id"] == "v02")  # how many faces: detect_faces, answer says 1
    found = _call(0, "detect_faces", {"image": "file-face"}, {"faces": 1, "boxes": []})
    assert _solved(faces, found + [FinalAnswer("There is one face.")], server_tools, {"face": "file-face"})
    assert not _solved(faces, found + [FinalAnswer("I see no faces.")], server_tools, {"face": "file-face"})
    assert not _solved(faces, found + [FinalAnswer("one")], server_tools, {"face": "file-other"})


def test_schema_validity_is_counted_per_call(server_tools):
    task = next(t for t in TASKS if t["id"] == "t01")
    steps = _call(0, "calculator", {"expression": "17 * 23"}) + _call(1, "calculator", {"expr": 1}) + _call(2, "nope", {})
    result = score(task, steps, server_tools)
    assert result["solved"] and result["calls"] == 3 and result["valid_calls"] == 1


# -- held out from the adapter's training data ------------------------------------------------------


def normalise(text: str) -> str:
    """A request's wording without its values: ids, placeholders, quoted strings and numbers
    replaced by a symbol, punctuation dropped, case and spacing folded."""
    text = text.lower()
    text = re.sub(r"\{\w+\}|\b(?:file|ftjob|evaljob|dep|job)-[\w-]+|\bft:\S+", " M ", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", " S ", text)
    text = re.sub(r"\d+(?:\.\d+)?", " N ", text)
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def test_normalising_keeps_the_wording_and_drops_the_values():
    assert normalise("How good is ft:smollm2:agentd::ab12 on ARC easy?") == normalise("how good is {tuned} on arc easy")
    assert normalise("Rotate file-9f3 by 90 degrees.") == normalise("Rotate {scan} by 45 degrees")
    assert normalise("Reverse 'hello'") == normalise('reverse "abc"')
    assert normalise("Rotate {scan} by 90 degrees.") != normalise("Turn {scan} by 90 degrees.")


def test_no_benchmark_request_is_phrased_as_a_generated_training_request():
    from agentd.tool_use import manifest
    from agentd.tool_use.data import trained_requests

    shipped = manifest() or {"seed": 0, "episodes": 1200}  # what the shipped adapter was trained on
    generated = {normalise(text) for text in trained_requests(shipped)}
    assert generated, "the generator made no requests"
    copied = [task["id"] for task in TASKS if normalise(task["request"]) in generated]
    assert not copied, f"benchmark requests also in the adapter's training data: {copied}"
