"""Graph logic with a scripted chat model, real tools and the real SQLite checkpointer."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentd.agents.runtime import AgentLimits, AgentRuntime
from agentd.agents.steps import (ApprovalRequired, FinalAnswer, NodeDone, NodeStarted, Observation, Plan, Retry,
                                 RunFailed, ToolCallStep)
from pipelines.engine import EngineError
from pipelines.openai_engine import OpenAIUpstreamEngine
from pipelines.registry import ModelRegistry, ModelSpec, parse_model_spec
from tests.fixtures.scripted_model import ScriptedChatModel, answer, calls
from tools import FileStore, ToolRegistry, tool
from tools.builtin.calculator import calculator
from tools.builtin.knowledge import KnowledgeTools
from tools.knowledge_base import KnowledgeBase
from agentd.llm.chat_model import ChatReply

DELETED: list[int] = []


@tool(requires_approval=True)
def delete_ticket(ticket_id: int) -> str:
    """Delete a ticket.

    Args:
        ticket_id: which ticket.
    """
    DELETED.append(ticket_id)
    return f"deleted {ticket_id}"


BARRIER = threading.Barrier(2, timeout=10)


@tool
def meet(n: int) -> int:
    """Wait until another call arrives too.

    Args:
        n: an id.
    """
    BARRIER.wait()
    return n


@tool(timeout=30)
async def wait_forever(seconds: float) -> str:
    """Sleep.

    Args:
        seconds: how long.
    """
    await asyncio.sleep(seconds)
    return "done"


@tool(long_running=True, timeout=30)
async def slow_job(seconds: float) -> str:
    """Wait for a job, as the finetune tool does.

    Args:
        seconds: how long the job takes.
    """
    await asyncio.sleep(seconds)
    return f"finished after {seconds:g} s"


@pytest.fixture()
def tools(tmp_path) -> ToolRegistry:
    knowledge = KnowledgeBase(tmp_path / "kb.sqlite")
    knowledge.ingest("handbook.md", b"# Handbook\n\n## Backups\n\nBackups run nightly at 02:00 to the NAS.\n\n"
                                    b"## Holidays\n\nStaff get 25 days of holiday a year.")
    return ToolRegistry([calculator, delete_ticket, meet, wait_forever, slow_job, KnowledgeTools(knowledge)],
                        file_store=FileStore(tmp_path / "files"))


async def open_runtime(tools, tmp_path, **limits) -> AgentRuntime:
    runtime = AgentRuntime(tools, tmp_path / "state", limits=AgentLimits(**limits))
    await runtime.open()
    return runtime


async def run(runtime, agent, text, llm, thread_id=None):
    """The steps of one run, and the run as the runtime recorded it."""
    agent_run = await runtime.start(agent, [{"role": "user", "content": text}], thread_id=thread_id, llm=llm)
    steps = [step async for step in agent_run]
    return steps, agent_run


def kinds(steps):
    return [type(step).__name__ for step in steps]


async def test_react_calls_a_tool_then_answers(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    llm = ScriptedChatModel(acts=[calls(("calculator", {"expression": "7 * 8"}), thought="multiply"),
                                  answer("56", thought="done")])
    steps, outcome = await run(runtime, "agentd-react", "What is 7 times 8?", llm)
    assert kinds(steps) == ["Thought", "ToolCallStep", "Observation", "Thought", "FinalAnswer"]
    assert steps[2].content == "56" and outcome.answer == "56" and outcome.status == "completed"
    # The observation reached the model as a tool message.
    assert llm.seen[1][1][-1] == {"role": "tool", "tool_call_id": steps[1].call.id, "name": "calculator",
                                  "content": "56"}
    stored = runtime.runs.get(outcome.id)
    assert stored["status"] == "completed" and [s["type"] for s in stored["steps"]][-1] == "final_answer"
    # Clients read a tool call step with the call's fields at its top level.
    assert stored["steps"][1] == {"type": "tool_call", "node": "", "call_id": steps[1].call.id,
                                  "name": "calculator", "arguments": {"expression": "7 * 8"}}
    await runtime.close()


async def test_react_runs_parallel_calls_concurrently(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    llm = ScriptedChatModel(acts=[calls(("meet", {"n": 1}), ("meet", {"n": 2})), answer("met")])
    steps, outcome = await run(runtime, "agentd-react", "meet twice", llm)
    assert sorted(s.content for s in steps if isinstance(s, Observation)) == ["1", "2"]
    assert outcome.answer == "met"
    await runtime.close()


async def test_tool_errors_become_observations_the_model_recovers_from(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)

    def correct_itself(messages, _tools):
        assert "division by zero" in messages[-1]["content"]
        return calls(("calculator", {"expression": "10 / 4"}))

    llm = ScriptedChatModel(acts=[calls(("calculator", {"expression": "10 / 0"})), correct_itself,
                                  answer("2.5")])
    steps, outcome = await run(runtime, "agentd-react", "divide", llm)
    observations = [s for s in steps if isinstance(s, Observation)]
    assert observations[0].is_error and "division by zero" in observations[0].content
    assert observations[1].content == "2.5" and outcome.answer == "2.5"
    unknown = ScriptedChatModel(acts=[calls(("no_such_tool", {})), answer("ok")])
    steps, _ = await run(runtime, "agentd-react", "call something odd", unknown)
    assert "no tool named 'no_such_tool'" in next(s for s in steps if isinstance(s, Observation)).content
    await runtime.close()


async def test_unreadable_steps_are_retried_and_the_step_limit_holds(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path, max_steps=3)
    garbled = ChatReply(error="the reply contains no JSON", raw="I think the answer is 4")
    llm = ScriptedChatModel(acts=[garbled] + [calls(("calculator", {"expression": "1+1"}))] * 5,
                            chats=["best effort: 2"])
    steps, outcome = await run(runtime, "agentd-react", "loop", llm)
    assert isinstance(steps[0], Retry) and "no JSON" in steps[0].reason
    assert sum(isinstance(s, ToolCallStep) for s in steps) == 2  # 3 model steps: 1 garbled + 2 calls
    assert outcome.answer == "best effort: 2"
    await runtime.close()


async def test_rewoo_plans_once_runs_waves_and_solves(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    plan = {"steps": [
        {"thought": "a", "tool": "meet", "arguments": {"n": 3}},
        {"thought": "b", "tool": "meet", "arguments": {"n": 4}},
        {"thought": "c", "tool": "calculator", "arguments": {"expression": "#E1 * #E2"}}]}
    llm = ScriptedChatModel(structured=[plan], acts=[answer("The product is 12.")])
    steps, outcome = await run(runtime, "agentd-rewoo", "multiply three and four", llm)
    assert isinstance(steps[0], Plan) and "#E3 = calculator" in steps[0].text()
    calls_made = [s for s in steps if isinstance(s, ToolCallStep)]
    assert calls_made[2].call.arguments == {"expression": "3 * 4"}  # the references were filled in
    assert [s.content for s in steps if isinstance(s, Observation)] == ["3", "4", "12"]
    # The model answers shown the plan as a ReAct run: each call as it ran, then its result.
    assert [kind for kind, _ in llm.seen] == ["structured", "act"]
    shown = llm.seen[-1][1]
    assert shown[0] == {"role": "user", "content": "multiply three and four"}
    assert shown[-2]["tool_calls"][0].arguments == {"expression": "3 * 4"} and shown[-2]["content"] == "c"
    assert shown[-1] == {"role": "tool", "tool_call_id": "#E3", "name": "calculator", "content": "12"}
    assert outcome.answer == "The product is 12."
    await runtime.close()


async def test_rewoo_reasks_for_a_plan_that_does_not_check(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    bad = {"steps": [{"thought": "x", "tool": "calculator", "arguments": {"expression": "#E2 + 1"}}]}
    good = {"steps": [{"thought": "x", "tool": "calculator", "arguments": {"expression": "2 + 1"}}]}
    llm = ScriptedChatModel(structured=[bad, good], acts=[answer("3")])
    steps, outcome = await run(runtime, "agentd-rewoo", "add", llm)
    assert isinstance(steps[0], Retry) and "#E2, which is not an earlier step" in steps[0].reason
    assert "could not run" in llm.seen[1][1][-1]["content"]
    assert isinstance(steps[1], Plan) and outcome.answer == "3"
    never = ScriptedChatModel(structured=[bad, bad, bad], chats=["no plan"])
    steps, outcome = await run(runtime, "agentd-rewoo", "add again", never)
    assert kinds(steps) == ["Retry", "Retry", "Retry", "FinalAnswer"] and outcome.answer == "no plan"
    await runtime.close()


async def test_rewoo_follow_up_makes_the_calls_the_plan_could_not_write(tools, tmp_path):
    # "Add six and one, then multiply that by five": shown the first result, the model computes with it.
    runtime = await open_runtime(tools, tmp_path)
    plan = {"steps": [{"thought": "add", "tool": "calculator", "arguments": {"expression": "6 + 1"}}]}
    times_five = calls(("calculator", {"expression": "7 * 5"}), thought="times five")
    llm = ScriptedChatModel(structured=[plan], acts=[times_five, answer("35")])
    steps, outcome = await run(runtime, "agentd-rewoo", "add six and one, then multiply that by five", llm)
    assert kinds(steps) == ["Plan", "ToolCallStep", "Observation", "Thought", "ToolCallStep", "Observation",
                            "FinalAnswer"]
    assert steps[4].call.id == "#E2" and steps[5].content == "35" and outcome.answer == "35"
    assert llm.seen[-1][1][-2]["content"] == "times five"
    assert llm.seen[-1][1][-1] == {"role": "tool", "tool_call_id": "#E2", "name": "calculator", "content": "35"}
    # A plan step repeating an earlier one is shown once (its thought, "then multiply", would say it was done).
    twice = {"steps": [{"thought": "add", "tool": "calculator", "arguments": {"expression": "6 + 1"}},
                       {"thought": "then multiply", "tool": "calculator", "arguments": {"expression": "6 + 1"}}]}
    repeated = ScriptedChatModel(structured=[twice], acts=[times_five, answer("35")])
    await run(runtime, "agentd-rewoo", "add six and one, then multiply that by five", repeated)
    shown = repeated.seen[1][1]
    assert [m["content"] for m in shown if m["role"] == "assistant"] == ["add"]
    assert [m["tool_call_id"] for m in shown if m["role"] == "tool"] == ["#E1"]
    # Out of steps once the plan has run, the solver answers without asking the model for more.
    short = await open_runtime(tools, tmp_path / "short", max_steps=1)
    solved = ScriptedChatModel(structured=[plan], chats=["7"])
    steps, outcome = await run(short, "agentd-rewoo", "add six and one", solved)
    assert [kind for kind, _ in solved.seen] == ["structured", "chat"] and outcome.answer == "7"
    await short.close()
    await runtime.close()


def test_a_plan_s_number_reference_takes_the_number_of_that_name_in_the_result():
    """Planned as `x: "#E1"` after detect_faces, a crop was given the whole result and refused."""
    from agentd.agents.rewoo import _substitute

    faces = ('{"faces": 1, "boxes": [{"x": 176, "y": 65, "width": 96, "height": 96}], '
             '"image": {"width": 512, "height": 512}}\n[image file-00112233: image/jpeg 512x512]')
    crop = {"image": "#E1", "x": "#E1", "y": "#E1.y", "width": "#E1", "height": "#E1.height"}
    assert _substitute(crop, {"#E1": faces}, {"#E1": "file-00112233"}, {"image"}, {"x", "y", "width", "height"}) == {
        "image": "file-00112233", "x": 176, "y": 65, "width": 96, "height": 96}  # the first face's, not the picture's
    stats = '{"width": 320, "height": 240, "channels": {"R": {"max": 250}}}'
    assert _substitute({"height": "#E1.height"}, {"#E1": stats}, number_parameters={"height"}) == {"height": 240}
    # Other arguments take the field named, or the whole result.
    job = '{"model": "smollm2", "fine_tuned_model": "ft:x"}'
    assert _substitute({"model": "#E1.fine_tuned_model", "suffix": "#E1"}, {"#E1": job}) == {
        "model": "ft:x", "suffix": {"model": "smollm2", "fine_tuned_model": "ft:x"}}


async def test_planner_searches_sub_questions_and_cites(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    decomposition = {"sub_questions": [
        {"question": "When do backups run?", "depends_on": []},
        {"question": "How many holiday days?", "depends_on": []},
        {"question": "Summarise both", "depends_on": ["Q1", "Q2", "Q9"]}]}

    def searcher(messages, tools_offered):
        assert {t["function"]["name"] for t in tools_offered} == {"knowledge_search", "final_answer"}
        question = messages[0]["content"]
        if messages[-1]["role"] == "tool":
            return answer(f"found: {messages[-1]['content'][:40]}")
        query = "backups" if "backups" in question else "holiday" if "holiday" in question else "handbook"
        return calls(("knowledge_search", {"query": query, "top_k": 1}))

    llm = ScriptedChatModel(structured=[decomposition], acts=[searcher] * 6, chats=["Nightly backups; 25 days."])
    steps, outcome = await run(runtime, "agentd-planner", "What does the handbook say about backups and holidays?", llm)
    plan = steps[0]
    assert isinstance(plan, Plan) and plan.items[2]["depends_on"] == ["Q1", "Q2"]  # Q9 does not exist: dropped
    started = [s.node for s in steps if isinstance(s, NodeStarted)]
    done = [s.node for s in steps if isinstance(s, NodeDone)]
    assert sorted(started[:2]) == ["Q1", "Q2"] and started[2] == "Q3" and set(done) == {"Q1", "Q2", "Q3"}
    assert steps.index(next(s for s in steps if isinstance(s, NodeStarted) and s.node == "Q3")) > max(
        steps.index(s) for s in steps if isinstance(s, NodeDone) and s.node in ("Q1", "Q2"))
    assert all(s.node for s in steps if isinstance(s, ToolCallStep))
    final = steps[-1]
    assert isinstance(final, FinalAnswer) and "handbook.md › Handbook › Backups" in final.sources
    assert "Sources:\n[1]" in outcome.answer
    await runtime.close()


async def test_approval_pauses_and_resumes_after_a_restart(tools, tmp_path):
    DELETED.clear()
    runtime = await open_runtime(tools, tmp_path)
    llm = ScriptedChatModel(acts=[calls(("delete_ticket", {"ticket_id": 7}))])
    steps, outcome = await run(runtime, "agentd-react", "delete ticket 7", llm, thread_id="t-approve")
    assert isinstance(steps[-1], ApprovalRequired) and steps[-1].calls[0].arguments == {"ticket_id": 7}
    assert steps[-1].to_dict()["calls"] == [{"id": steps[-1].calls[0].id, "name": "delete_ticket",
                                             "arguments": {"ticket_id": 7}}]
    assert outcome.status == "requires_approval" and DELETED == []
    await runtime.close()

    restarted = await open_runtime(tools, tmp_path)  # a new runtime on the same files: a server restart
    unclear = ScriptedChatModel()
    steps, outcome = await run(restarted, "agentd-react", "what?", unclear, thread_id="t-approve")
    assert kinds(steps) == ["ApprovalRequired"] and unclear.seen == []
    resumed = ScriptedChatModel(acts=[answer("Ticket 7 is deleted.")])
    steps, outcome = await run(restarted, "agentd-react", "approve", resumed, thread_id="t-approve")
    assert DELETED == [7] and outcome.answer == "Ticket 7 is deleted."
    assert next(s for s in steps if isinstance(s, Observation)).content == "deleted 7"

    rejecting = ScriptedChatModel(acts=[calls(("delete_ticket", {"ticket_id": 8})), answer("Not deleted.")])
    await run(restarted, "agentd-react", "delete ticket 8", rejecting, thread_id="t-reject")
    steps, outcome = await run(restarted, "agentd-react", "reject", rejecting, thread_id="t-reject")
    assert DELETED == [7] and "rejected" in next(s for s in steps if isinstance(s, Observation)).content
    await restarted.close()


async def test_threads_continue_the_conversation(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    first = ScriptedChatModel(acts=[answer("Hello Ada.")])
    await run(runtime, "agentd-react", "My name is Ada.", first, thread_id="t-memory")
    second = ScriptedChatModel(acts=[answer("You are Ada.")])
    await run(runtime, "agentd-react", "Who am I?", second, thread_id="t-memory")
    contents = [m.get("content") for m in second.seen[0][1]]
    assert contents == ["My name is Ada.", "Who am I?"]
    await runtime.close()


async def test_time_limit_and_cancellation_stop_the_run(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path, time_limit_s=0.5)
    llm = ScriptedChatModel(acts=[calls(("wait_forever", {"seconds": 20}))])
    steps, outcome = await run(runtime, "agentd-react", "wait", llm)
    assert isinstance(steps[-1], RunFailed) and "0.5 s limit" in steps[-1].message and outcome.status == "failed"
    # The message says what the limit stopped, and that long-running tools are not held to it.
    assert "while running wait_forever" in steps[-1].message and "long-running tools such as slow_job" in steps[-1].message
    await runtime.close()

    runtime = await open_runtime(tools, tmp_path)
    llm = ScriptedChatModel(acts=[calls(("wait_forever", {"seconds": 20}))])
    agent_run = await runtime.start("agentd-react", [{"role": "user", "content": "wait"}], llm=llm)
    async for step in agent_run:
        if isinstance(step, ToolCallStep):
            break
    await agent_run.aclose()
    assert agent_run.status == "cancelled" and runtime.runs.get(agent_run.id)["status"] == "cancelled"
    await runtime.close()


async def test_a_long_running_tool_is_not_cut_off_by_the_run_time_limit(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path, time_limit_s=0.5)
    llm = ScriptedChatModel(acts=[calls(("slow_job", {"seconds": 1.5})), answer("The job finished.")])
    steps, outcome = await run(runtime, "agentd-react", "run the slow job", llm)
    assert outcome.status == "completed" and outcome.answer == "The job finished."
    assert next(s for s in steps if isinstance(s, Observation)).content == "finished after 1.5 s"
    # The deadline resumes after the long-running tool: time outside it still counts.
    llm = ScriptedChatModel(acts=[calls(("slow_job", {"seconds": 1.0})), calls(("wait_forever", {"seconds": 20}))])
    steps, outcome = await run(runtime, "agentd-react", "run both", llm)
    assert outcome.status == "failed" and "while running wait_forever" in steps[-1].message
    assert [s.content for s in steps if isinstance(s, Observation)] == ["finished after 1 s"]
    await runtime.close()


async def test_each_agent_type_keeps_its_own_threads(tools, tmp_path):
    DELETED.clear()
    runtime = await open_runtime(tools, tmp_path)
    waiting = ScriptedChatModel(acts=[calls(("delete_ticket", {"ticket_id": 9}))])
    steps, _ = await run(runtime, "agentd-react", "delete ticket 9", waiting, thread_id="t-shared")
    assert isinstance(steps[-1], ApprovalRequired)
    # The same thread id with another agent is another thread: no approval pending, no state carried over.
    plan = {"steps": [{"thought": "x", "tool": "calculator", "arguments": {"expression": "2 + 2"}}]}
    rewoo = ScriptedChatModel(structured=[plan], acts=[answer("4")])
    steps, outcome = await run(runtime, "agentd-rewoo", "approve", rewoo, thread_id="t-shared")
    assert kinds(steps) == ["Plan", "ToolCallStep", "Observation", "FinalAnswer"] and outcome.answer == "4"
    assert DELETED == []
    planner = ScriptedChatModel(structured=[{"sub_questions": [{"question": "sum?", "depends_on": []}]}],
                                acts=[answer("4")], chats=["Four."])
    await run(runtime, "agentd-planner", "What was the sum?", planner, thread_id="t-shared")
    assert [m["content"] for m in planner.seen[0][1][1:]] == ["What was the sum?"]  # no ReWOO turns
    # …and the ReAct thread still waits for its approval.
    steps, _ = await run(runtime, "agentd-react", "what?", ScriptedChatModel(), thread_id="t-shared")
    assert kinds(steps) == ["ApprovalRequired"]
    await runtime.close()


async def test_the_runtime_refuses_a_model_that_is_not_ready(tools, tmp_path):
    models = ModelRegistry([ModelSpec(id="brain", kind="local", location=str(tmp_path))], tmp_path)
    runtime = AgentRuntime(tools, tmp_path / "state", models, "brain")
    await runtime.open()
    with pytest.raises(EngineError, match="brain is still loading") as loading:
        await runtime.start("agentd-react", [{"role": "user", "content": "hi"}])
    models.failures["brain"] = "no weights"
    with pytest.raises(EngineError, match="brain failed to load: no weights") as failed:
        await runtime.start("agentd-react", [{"role": "user", "content": "hi"}])
    assert loading.value.status == failed.value.status == 503
    assert runtime.runs.list() == []  # nothing ran
    await runtime.close()


async def test_planner_follow_ups_see_the_thread(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    one = {"sub_questions": [{"question": "backups?", "depends_on": []}]}
    first = ScriptedChatModel(structured=[one], acts=[answer("nightly")], chats=["Backups run nightly."])
    await run(runtime, "agentd-planner", "When do backups run?", first, thread_id="t-planner")
    second = ScriptedChatModel(structured=[one], acts=[answer("30 days")], chats=["Kept 30 days."])
    await run(runtime, "agentd-planner", "And how long are they kept?", second, thread_id="t-planner")
    decompose_messages = second.seen[0][1]
    assert [m["content"] for m in decompose_messages[1:]] == [
        "When do backups run?", "Backups run nightly.", "And how long are they kept?"]
    await runtime.close()


async def leave_at_the_last_step(runtime, text, llm, thread_id=None):
    """A client that goes away as soon as it has the run's last step; the run as stored then."""
    agent_run = await runtime.start("agentd-react", [{"role": "user", "content": text}], thread_id=thread_id, llm=llm)
    async for step in agent_run:
        if isinstance(step, (FinalAnswer, ApprovalRequired, RunFailed)):
            break
    await agent_run.aclose()  # GeneratorExit at the yield of that last step
    return runtime.runs.get(agent_run.id)


async def test_a_run_is_recorded_before_its_last_step_goes_out(tools, tmp_path):
    DELETED.clear()
    runtime = await open_runtime(tools, tmp_path)
    done = await leave_at_the_last_step(runtime, "What is 7 times 8?", ScriptedChatModel(acts=[answer("56")]))
    assert done["status"] == "completed" and done["answer"] == "56" and done["steps"][-1]["type"] == "final_answer"
    deleting = ScriptedChatModel(acts=[calls(("delete_ticket", {"ticket_id": 5}))])
    paused = await leave_at_the_last_step(runtime, "delete ticket 5", deleting, thread_id="t-leave")
    assert paused["status"] == "requires_approval"
    # The thread still waits: this run answers with the pending calls before the graph runs.
    again = await leave_at_the_last_step(runtime, "what?", ScriptedChatModel(), thread_id="t-leave")
    assert again["status"] == "requires_approval" and [s["type"] for s in again["steps"]] == ["approval_required"]

    def upstream_down(_messages, _tools):
        raise EngineError("the upstream is unreachable", status=502)

    failed = await leave_at_the_last_step(runtime, "What is 1 + 1?", ScriptedChatModel(acts=[upstream_down]))
    assert failed["status"] == "failed" and failed["error"] == "the upstream is unreachable"
    assert DELETED == []
    await runtime.close()


async def test_the_agents_chat_model_lasts_as_long_as_its_engine(tools, tmp_path):
    """What a chat model learned (an upstream that refuses tool calling) holds for the next runs,
    not only the one that paid a failed request to learn it; a reloaded engine starts afresh."""
    models = ModelRegistry([parse_model_spec("far=http://127.0.0.1:9/v1")], tmp_path)
    await models.load_all()
    runtime = AgentRuntime(tools, tmp_path / "state", models, "far")
    await runtime.open()
    first = await runtime.chat_model()
    first.native_tools = False  # as after the upstream answered a tool call request with a 400
    assert await runtime.chat_model() is first
    models.engines["far"] = OpenAIUpstreamEngine("far", "http://127.0.0.1:9/v1")  # unloaded and loaded again
    renewed = await runtime.chat_model()
    assert renewed is not first and renewed.engine is models.engines["far"] and renewed.native_tools
    assert await runtime.chat_model() is renewed
    await runtime.close()
    await first.engine.close()
    await models.close()
