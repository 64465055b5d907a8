"""The tool router: a classifier over sentence embeddings that narrows a run's first call to the tools
a request points at, fitted on the adapter's own synthetic runs and shipped beside it.

The shipped router with the real embedding model; the graphs' use of it with a scripted model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agentd.tool_use import ADAPTER_DIR, known_tools, manifest, tool_router
from agentd.tool_use.router import NO_TOOL, ToolRouter, first_calls, train_router
from tests.fixtures.scripted_model import ScriptedChatModel, answer, calls
from tests.test_agents import open_runtime, run
from tools import FileStore, ToolRegistry, tool
from tools.builtin.calculator import calculator


class WordCounts:
    """Sentence vectors from a fixed vocabulary (unit length), so the classifier's logic is tested
    without the embedding model."""

    VOCABULARY = ("add", "sum", "plus", "rotate", "turn", "flip", "deploy", "serve", "hello", "thanks")

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = np.array([[text.lower().split().count(w) + 1e-3 for w in self.VOCABULARY] for text in texts],
                        dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


PAIRS = ([(f"add {n} plus {n}", "calculator") for n in range(30)] + [(f"sum {n}", "calculator") for n in range(30)]
         + [(f"rotate picture {n}", "rotate_image") for n in range(30)] + [(f"turn it {n}", "rotate_image") for n in range(30)]
         + [(f"deploy model {n}", "deploy") for n in range(30)] + [(f"serve model {n}", "deploy") for n in range(30)]
         + [(f"hello {n}", NO_TOOL) for n in range(30)] + [(f"flip {n}", "rare_tool") for n in range(5)])


def test_a_fitted_router_keeps_the_likely_tools_and_never_drops_what_it_cannot_judge(tmp_path):
    router, report = train_router(PAIRS, embedder=WordCounts())
    assert report["top1"] >= 0.9 and report[f"mass {report['mass']}"]["recall"] == 1.0
    names = ["calculator", "rotate_image", "deploy", "rare_tool", "users_own_tool"]
    kept = router.first_tools("please add 2 plus 3", names)
    assert "calculator" in kept and "deploy" not in kept and "rotate_image" not in kept
    # Too few examples to judge (5 < MIN_EXAMPLES), or never trained on: always kept.
    assert {"rare_tool", "users_own_tool"} <= kept
    assert "deploy" in router.first_tools("serve the model", names)

    router.save(tmp_path)
    loaded = ToolRouter.load(tmp_path, embedder=WordCounts())
    assert loaded.labels == router.labels and loaded.mass == router.mass
    assert loaded.first_tools("turn the picture", names) == router.first_tools("turn the picture", names)
    assert ToolRouter.load(tmp_path / "missing") is None


def test_first_calls_are_read_from_react_steps_and_plans():
    def row(*turns):
        return {"messages": [{"role": "system", "content": "tools"}, *turns]}

    step = json.dumps({"thought": "t", "tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]})
    rows = [row({"role": "user", "content": "1 plus 1"}, {"role": "assistant", "content": step}),
            row({"role": "user", "content": "plan it"},
                {"role": "assistant", "content": json.dumps({"steps": [{"thought": "", "tool": "deploy", "arguments": {}}]})}),
            row({"role": "user", "content": "hi"}, {"role": "assistant", "content": json.dumps({"steps": []})}),
            row({"role": "user", "content": "solve"}, {"role": "assistant", "content": "The answer is 2."}),
            row({"role": "user", "content": "made up"},
                {"role": "assistant", "content": step.replace("calculator", "weather")})]
    assert first_calls(rows, ["calculator", "deploy"]) == [("1 plus 1", "calculator"), ("plan it", "deploy"),
                                                           ("hi", NO_TOOL)]


def test_the_shipped_router_points_unseen_wordings_at_their_tools():
    """The real router and embedding model, on wordings the adapter alone got wrong (a picture turned
    upside down went to `undeploy`) and on plain ones: the right tool is kept, and fewer than all."""
    assert manifest() is not None and (ADAPTER_DIR / "router.json").is_file()
    router = tool_router()
    assert set(router.labels) - {NO_TOOL} <= known_tools()
    names = sorted(known_tools())
    picture = "[image file-9f0c43ed67f3e064d438bb76]"
    upside_down = router.first_tools(f"Turn {picture} upside down.", names)
    assert "rotate_image" in upside_down and len(upside_down) < len(names)
    assert tool_router().probabilities([f"Turn {picture} upside down."])[0].argmax() == router.labels.index("rotate_image")
    assert "convert_image" in router.first_tools(f"Make a black and white copy of {picture}.", names)
    sum_ = router.first_tools("What is 1234 + 5678?", names)
    assert "calculator" in sum_ and "finetune" not in sum_ and len(sum_) < len(names)
    assert "finetune" in router.first_tools("Could you run a single epoch of training on smollm2 with my_data.jsonl?", names)


@tool
def rotate(degrees: int) -> str:
    """Rotate the picture.

    Args:
        degrees: how far.
    """
    return f"rotated {degrees}"


@pytest.fixture()
def tools(tmp_path) -> ToolRegistry:
    registry = ToolRegistry([calculator, rotate], file_store=FileStore(tmp_path / "files"))
    yield registry
    registry.close()


class OnlyRotate:
    def first_tools(self, request, names):
        return {n for n in names if n == "rotate"}


async def test_react_limits_only_its_first_call_to_the_routed_tools(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    llm = ScriptedChatModel(acts=[calls(("rotate", {"degrees": 180})), calls(("calculator", {"expression": "1+1"})),
                                  answer("done")])
    llm.router = OnlyRotate()
    _, outcome = await run(runtime, "agentd-react", "Turn it upside down, then add 1 and 1.", llm)
    assert outcome.answer == "done"
    # The first step may call rotate or answer; the later ones anything.
    assert llm.callable == [["final_answer", "rotate"], None, None]


async def test_a_named_tool_choice_or_no_router_leaves_the_first_call_free(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    free = ScriptedChatModel(acts=[answer("hi")])
    await run(runtime, "agentd-react", "Turn it upside down.", free)
    assert free.callable == [None]
    forced = ScriptedChatModel(acts=[calls(("calculator", {"expression": "2"})), answer("2")])
    forced.router = OnlyRotate()
    agent_run = await runtime.start("agentd-react", [{"role": "user", "content": "Turn it."}], llm=forced,
                                    tool_choice={"name": "calculator"})
    [step async for step in agent_run]
    assert forced.callable[0] is None


class Broken:
    def first_tools(self, request, names):
        raise RuntimeError("the tool router needs the embedded embedding model")


async def test_a_router_that_cannot_run_narrows_nothing_and_the_run_goes_on(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    llm = ScriptedChatModel(acts=[calls(("rotate", {"degrees": 90})), answer("done")])
    llm.router = Broken()
    _, outcome = await run(runtime, "agentd-react", "Turn it a quarter.", llm)
    assert outcome.answer == "done" and outcome.status == "completed"
    assert llm.callable == [None, None]


async def test_rewoo_plans_its_first_step_among_the_routed_tools(tools, tmp_path):
    import jsonschema
    import xgrammar
    from xgrammar.testing import _is_grammar_accept_string as accepts

    runtime = await open_runtime(tools, tmp_path)
    plan = {"steps": [{"thought": "turn", "tool": "rotate", "arguments": {"degrees": 180}},
                      {"thought": "add", "tool": "calculator", "arguments": {"expression": "1+1"}}]}
    llm = ScriptedChatModel(structured=[plan], acts=[answer("done")])
    llm.router = OnlyRotate()
    _, outcome = await run(runtime, "agentd-rewoo", "Turn it upside down, then add 1 and 1.", llm)
    assert outcome.answer == "done"
    schema = llm.schemas[0]
    jsonschema.validate(plan, schema)
    # The grammar the engine enforces (the same compiler): rotate or nothing first, then anything.
    grammar = xgrammar.Grammar.from_json_schema(json.dumps(schema))
    assert accepts(grammar, json.dumps(plan)) and accepts(grammar, '{"steps": []}')
    assert not accepts(grammar, json.dumps({"steps": plan["steps"][::-1]}))
    assert not accepts(grammar, json.dumps({"steps": plan["steps"][1:]}))

    free = ScriptedChatModel(structured=[{"steps": []}], chats=["hi"])
    free.router = Broken()
    _, outcome = await run(runtime, "agentd-rewoo", "Turn it.", free)
    assert outcome.status == "completed" and "prefixItems" not in free.schemas[0]["properties"]["steps"]
    await runtime.close()
