"""Agent loop quality: repeated calls are not run again, the answer streams as it is written,
and a run out of steps answers from its results rather than restating the question.

Graph logic with a scripted model, real tools and the real SQLite checkpointer; the stream
through the real HTTP server and the openai client with the embedded model."""

from __future__ import annotations

import json
import re

import pytest

from agentd.agents.answers import CheckedAnswer, restates
from agentd.agents.context import FINAL_ANSWER
from agentd.agents.runtime import AgentRuntime
from agentd.agents.steps import AnswerDelta, FinalAnswer, Observation, ToolCallStep
from agentd.llm.chat_model import ChatReply, step_schema
from agentd.llm.streaming import AnswerArgumentStream, StopGeneration, TrimmedStream, in_a_loop
from agentd.server.agents import _chunks
from agentd.server.generation import RequestRecord
from agentd.server.metrics import ServerMetrics
from tests.fixtures.image_tools import paint
from tests.fixtures.scripted_model import ScriptedChatModel, answer, calls
from tests.test_agents import open_runtime, run
from tools import FileStore, ToolRegistry, tool
from tools.base import ToolError
from tools.builtin.calculator import calculator

RAN: list[int] = []


@tool
def lookup(n: int) -> str:
    """Look a number up (counts how often it really runs).

    Args:
        n: the number.
    """
    RAN.append(n)
    if n < 0:
        raise ToolError(f"no entry {n}")
    return f"entry {n}: {n * 17}"


@pytest.fixture()
def tools(tmp_path) -> ToolRegistry:
    RAN.clear()
    registry = ToolRegistry([calculator, lookup, paint], file_store=FileStore(tmp_path / "files"))
    yield registry
    registry.close()


def of(kind, steps):
    return [s for s in steps if isinstance(s, kind)]


# --- repeated calls -------------------------------------------------------------------------------

async def test_react_does_not_run_a_repeated_call_and_says_it_has_the_result(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    garbled = ChatReply(error="the reply contains no JSON", raw="lookup 23")
    llm = ScriptedChatModel(acts=[calls(("lookup", {"n": 23})), garbled,
                                  calls(("lookup", {"n": 23}), ("lookup", {"n": 5})),
                                  answer("Entry 23 is 391.")])
    steps, outcome = await run(runtime, "agentd-react", "Look up 23.", llm, thread_id="t-repeat")
    assert RAN == [23, 5]  # 23 ran once, though asked for twice (a retry in between is no new turn)
    first, repeated, other = of(Observation, steps)
    assert first.content == "entry 23: 391" and not first.is_error
    assert repeated.repeat_of == first.call_id and not repeated.is_error
    assert repeated.content == ("You already called lookup with these arguments; its result was: entry 23: 391. "
                                "Use that result: answer with final_answer, or call a different tool.")
    assert other.content == "entry 5: 85" and not other.repeat_of
    # The repeated call and its observation still streamed, and the model read the notice.
    assert len(of(ToolCallStep, steps)) == 3
    assert llm.seen[3][1][-2]["content"].startswith("You already called lookup")
    assert outcome.answer == "Entry 23 is 391."
    stored = [s for s in runtime.runs.get(outcome.id)["steps"] if s["type"] == "observation"]
    assert [s["repeat_of"] for s in stored] == ["", first.call_id, ""]

    # A call that failed is not run again either: the model is told it failed, and how.
    failing = ScriptedChatModel(acts=[calls(("lookup", {"n": -1})), calls(("lookup", {"n": -1})), answer("No entry -1.")])
    steps, _ = await run(runtime, "agentd-react", "Look up -1.", failing, thread_id="t-fail")
    failed, repeated = of(Observation, steps)
    assert RAN.count(-1) == 1 and failed.is_error and repeated.is_error and repeated.repeat_of == failed.call_id
    assert repeated.content.startswith("You already called lookup with these arguments and it failed: Error (")

    # A new user turn is a new run: the same call runs again.
    again = ScriptedChatModel(acts=[calls(("lookup", {"n": 23})), answer("391 again.")])
    steps, _ = await run(runtime, "agentd-react", "Look it up once more.", again, thread_id="t-repeat")
    assert RAN == [23, 5, -1, 23] and not of(Observation, steps)[0].repeat_of
    await runtime.close()


async def test_after_a_step_of_only_repeats_the_model_may_only_answer(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    offered = []

    def answer_with_what_is_offered(messages, tools_offered):
        offered.append([t["function"]["name"] for t in tools_offered])
        return answer("Entry 23 is 391.")

    llm = ScriptedChatModel(acts=[calls(("lookup", {"n": 23})), calls(("lookup", {"n": 23})), answer_with_what_is_offered])
    _, outcome = await run(runtime, "agentd-react", "Look up 23.", llm)
    assert offered == [["final_answer"]] and outcome.answer == "Entry 23 is 391." and RAN == [23]
    # A step with one new call besides the repeat leaves every tool on offer.
    RAN.clear()
    offered.clear()
    llm = ScriptedChatModel(acts=[calls(("lookup", {"n": 23})), calls(("lookup", {"n": 23}), ("lookup", {"n": 4})),
                                  answer_with_what_is_offered])
    await run(runtime, "agentd-react", "Look up 23 and 4.", llm)
    assert "lookup" in offered[0] and "final_answer" in offered[0]
    await runtime.close()


async def test_a_call_repeated_within_one_step_runs_once(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    twice = calls(("calculator", {"expression": "2 + 2"}), ("calculator", {"expression": "2 + 2"}))
    llm = ScriptedChatModel(acts=[twice, answer("4")])
    steps, _ = await run(runtime, "agentd-react", "add", llm)
    first, second = of(Observation, steps)
    assert first.content == "4" and second.repeat_of == first.call_id and "its result was: 4." in second.content
    await runtime.close()


async def test_rewoo_reuses_the_evidence_of_an_identical_step(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    plan = {"steps": [
        {"thought": "a", "tool": "lookup", "arguments": {"n": 3}},
        {"thought": "b", "tool": "lookup", "arguments": {"n": 3}},  # same wave, same call
        {"thought": "c", "tool": "calculator", "arguments": {"expression": "6 + 1"}},
        {"thought": "d", "tool": "calculator", "arguments": {"expression": "#E3 - 1"}},
        {"thought": "e", "tool": "calculator", "arguments": {"expression": "7 - 1"}}]}  # what #E4 becomes
    llm = ScriptedChatModel(structured=[plan], acts=[answer("Entry 3 is 51 and 7 - 1 is 6.")])
    steps, outcome = await run(runtime, "agentd-rewoo", "look up 3 and do sums", llm)
    assert RAN == [3]
    observations = {o.call_id: o for o in of(Observation, steps)}
    assert observations["#E2"].content == "entry 3: 51" and observations["#E2"].repeat_of == "#E1"
    # #E5 ran in the first wave; #E4, filled in later, turned out to be the same call.
    assert observations["#E4"].content == "6" and observations["#E4"].repeat_of == "#E5"
    assert "same call as #E5" in observations["#E4"].text()
    shown = llm.seen[-1][1]
    # Shown to the model once each, in the plan's order: a repeat tells it nothing new.
    assert [m["tool_call_id"] for m in shown if m["role"] == "tool"] == ["#E1", "#E3", "#E4"]
    assert [m["content"] for m in shown if m["role"] == "tool"].count("entry 3: 51") == 1
    assert outcome.answer == "Entry 3 is 51 and 7 - 1 is 6."
    await runtime.close()


# --- the answer streams -----------------------------------------------------------------------------

async def test_react_and_rewoo_answers_stream_and_add_up_to_the_final_answer(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    llm = ScriptedChatModel(acts=[calls(("calculator", {"expression": "17 * 23"})),
                                  answer("17 times 23 is 391.")], streams=True)
    steps, outcome = await run(runtime, "agentd-react", "What is 17 times 23?", llm)
    pieces = of(AnswerDelta, steps)
    assert len(pieces) == 5 and "".join(p.content for p in pieces) == "17 times 23 is 391."
    assert isinstance(steps[-1], FinalAnswer) and steps[-1].answer == outcome.answer == "17 times 23 is 391."
    assert steps.index(pieces[-1]) < len(steps) - 1  # the pieces come before the FinalAnswer
    # The trace keeps the FinalAnswer, not the pieces.
    assert "answer_delta" not in [s["type"] for s in runtime.runs.get(outcome.id)["steps"]]

    plan = {"steps": [{"thought": "x", "tool": "calculator", "arguments": {"expression": "6 * 7"}}]}
    # ReWOO's answer is held back until its first sentence shows it is no restated question.
    said = "Six times seven makes 42 according to the calculator result above. It is 42."
    rewoo = ScriptedChatModel(structured=[plan], acts=[answer(said)], streams=True)
    steps, outcome = await run(runtime, "agentd-rewoo", "multiply six and seven", rewoo)
    assert [p.content for p in of(AnswerDelta, steps)] == [said[:-10], " It", " is", " 42."]
    assert outcome.answer == said
    # So is the solver's, when it answers (here the model repeats the plan's call instead of answering).
    solved = ScriptedChatModel(structured=[plan], acts=[calls(("calculator", {"expression": "6 * 7"}))],
                               chats=[f"  {said}  "], streams=True)
    steps, outcome = await run(runtime, "agentd-rewoo", "multiply six and seven", solved)
    assert [p.content for p in of(AnswerDelta, steps)] == [said[:-10], " It", " is", " 42."]
    assert outcome.answer == said and [kind for kind, _ in solved.seen] == ["structured", "act", "chat"]
    short = ScriptedChatModel(structured=[plan], acts=[answer("It is 42.")], streams=True)
    steps, outcome = await run(runtime, "agentd-rewoo", "multiply six and seven", short)
    assert [p.content for p in of(AnswerDelta, steps)] == ["It is 42."] and outcome.answer == "It is 42."
    await runtime.close()


async def test_a_planner_searchers_sub_answers_do_not_stream(tools, tmp_path):
    runtime = AgentRuntime(tools, tmp_path / "state", search_tools=("lookup",))
    await runtime.open()
    llm = ScriptedChatModel(structured=[{"sub_questions": [{"question": "entry 2?", "depends_on": []}]}],
                            acts=[answer("entry 2 is 34")], chats=["Entry 2 is 34."], streams=True)
    steps, outcome = await run(runtime, "agentd-planner", "What is entry 2?", llm)
    assert not of(AnswerDelta, steps) and outcome.answer == "Entry 2 is 34."
    await runtime.close()


async def test_the_server_sends_the_pieces_then_only_the_links_added_after_them(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    llm = ScriptedChatModel(acts=[calls(("paint", {"width": 4, "height": 2, "color": "red"})),
                                  answer("Here is a red picture.")], streams=True)
    agent_run = await runtime.start("agentd-react", [{"role": "user", "content": "paint red"}], llm=llm)
    record = RequestRecord(ServerMetrics(), "chat", "agentd-react")
    chunks = [c async for c in _chunks(agent_run, {"id": "x", "created": 0, "model": "agentd-react"}, record)]
    content = [c["choices"][0]["delta"].get("content") for c in chunks]
    content = [c for c in content if c]
    assert content[:5] == ["Here", " is", " a", " red", " picture."]
    assert "".join(content) == agent_run.answer
    assert content[-1].startswith("\n\n![") and "/files/file-" in content[-1]  # the link, sent once, last
    assert agent_run.answer.startswith("Here is a red picture.\n\n![")
    await runtime.close()


def test_a_final_answer_is_read_out_of_the_step_as_it_is_written():
    answer_text = '  Line one\n"quoted" é \u2014 😀 \\ tab\t end  '
    step = {"thought": 'not "name": "final_answer" here',
            "tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}},
                           {"name": "final_answer", "arguments": {"answer": answer_text}}]}
    for ascii_only in (True, False):
        raw = json.dumps(step, ensure_ascii=ascii_only)
        for size in (1, 2, 3, 5):  # escapes and surrogate pairs cut anywhere
            pieces = []
            stream = AnswerArgumentStream(pieces.append)
            for start in range(0, len(raw), size):
                stream(raw[start:start + size])
            assert "".join(pieces) == answer_text.strip() and len(pieces) > 5
    pieces = []
    TrimmedStream(pieces.append)("")
    stream = TrimmedStream(pieces.append)
    for piece in ("  ", "a", " ", "b", "  "):
        stream(piece)
    assert pieces == ["a", " b"]


def test_the_final_answer_may_quote_a_table_other_strings_stay_short():
    schema = step_schema([calculator.definition(), FINAL_ANSWER], 1)
    by_name = {v["properties"]["name"]["const"]: v for v in schema["properties"]["tool_calls"]["items"]["anyOf"]}
    assert by_name["final_answer"]["properties"]["arguments"]["properties"]["answer"]["maxLength"] == 1200
    assert by_name["calculator"]["properties"]["arguments"]["properties"]["expression"]["maxLength"] == 240


# --- out of steps: the best answer so far -----------------------------------------------------------

def test_restating_is_told_from_answering():
    question = "What is the sum of the primes below 20?"
    assert restates("", question, "77")
    assert restates("What is the sum of the primes below 20?", question, "77")
    assert restates("The sum of the primes below 20.", question, "77")
    assert not restates("The sum of the primes below 20 is 77.", question, "77")
    assert not restates("It is seventy-seven, from the python result.", question, "77")


async def test_a_run_out_of_steps_answers_from_its_results_not_with_the_question(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path, max_steps=2)
    question = "What is 17 times 23 plus 1?"
    looping = [calls(("calculator", {"expression": "17 * 23"})), calls(("calculator", {"expression": "391 + 1"}))]
    llm = ScriptedChatModel(acts=list(looping), chats=["What is 17 times 23 plus 1?"], streams=True)
    steps, outcome = await run(runtime, "agentd-react", question, llm)
    assert outcome.answer == "Here is what I found: 392"
    assert not of(AnswerDelta, steps)  # the restatement was held back, never shown
    # An answer that uses the result goes out as the model writes it.
    good = ScriptedChatModel(acts=list(looping), chats=["17 times 23 plus 1 is 392."], streams=True)
    steps, outcome = await run(runtime, "agentd-react", question, good)
    assert outcome.answer == "17 times 23 plus 1 is 392." == "".join(p.content for p in of(AnswerDelta, steps))
    # Errors and repeats are no result to quote: the last real one is.
    failing = [calls(("calculator", {"expression": "17 * 23"})), calls(("calculator", {"expression": "1 / 0"}))]
    steps, outcome = await run(runtime, "agentd-react", question, ScriptedChatModel(acts=failing, chats=[""]))
    assert outcome.answer == "Here is what I found: 391"
    await runtime.close()


async def test_an_answer_written_as_a_json_step_never_goes_out(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path, max_steps=2)
    step = '{"thought": "The tool gave the answer.", "tool_calls": [{"name": "calculator", "arguments": {}}]}'
    looping = [calls(("calculator", {"expression": "17 * 23"})), calls(("calculator", {"expression": "391 + 1"}))]
    steps, outcome = await run(runtime, "agentd-react", "What is 17 * 23 + 1?",
                               ScriptedChatModel(acts=looping, chats=[step], streams=True))
    assert outcome.answer == "Here is what I found: 392" and not of(AnswerDelta, steps)
    # Nothing found to give instead: the run says it found no answer, not the JSON.
    failing = [calls(("calculator", {"expression": "1 / 0"})), calls(("calculator", {"expression": "2 / 0"}))]
    steps, outcome = await run(runtime, "agentd-react", "What is 1 / 0?",
                               ScriptedChatModel(acts=failing, chats=[step], streams=True))
    assert outcome.answer == "I could not find the answer within the steps this run may take."
    assert not of(AnswerDelta, steps)
    # An answer that only starts with a brace is still an answer.
    checked = CheckedAnswer(None, "Show the set.", "")
    assert checked.final("{1, 2} is the set.") == "{1, 2} is the set."
    await runtime.close()


async def test_a_rewoo_answer_restating_the_question_gives_way_to_the_evidence(tools, tmp_path):
    runtime = await open_runtime(tools, tmp_path)
    plan = {"steps": [{"thought": "x", "tool": "lookup", "arguments": {"n": 4}}]}
    llm = ScriptedChatModel(structured=[plan], acts=[answer("Look up entry 4.")], streams=True)
    steps, outcome = await run(runtime, "agentd-rewoo", "Look up entry 4.", llm)
    assert outcome.answer == "Here is what I found: entry 4: 68" and not of(AnswerDelta, steps)
    # The solver's (when the model's follow-up is no answer: here it repeats the plan's call).
    solved = ScriptedChatModel(structured=[plan], acts=[calls(("lookup", {"n": 4}))], chats=["Look up entry 4."],
                               streams=True)
    steps, outcome = await run(runtime, "agentd-rewoo", "Look up entry 4.", solved)
    assert outcome.answer == "Here is what I found: entry 4: 68" and not of(AnswerDelta, steps)
    assert [kind for kind, _ in solved.seen] == ["structured", "act", "chat"]
    await runtime.close()


def test_a_checked_answer_is_judged_on_its_first_sentence():
    sent = []
    checked = CheckedAnswer(sent.append, "What is 17 * 23?", "391")
    for piece in ["What", " is", " 17", " *", " 23", "?", " The", " answer", " is", " 391", ".", " Done"]:
        checked(piece)
    assert "".join(s.content for s in sent) == "What is 17 * 23? The answer is 391. Done"
    assert checked.final("What is 17 * 23? The answer is 391. Done") == "What is 17 * 23? The answer is 391. Done"


# --- end to end: the embedded model through the server and the openai client ------------------------

def test_the_answer_streams_in_pieces_through_the_openai_client(client):
    stream = client.chat.completions.create(
        model="agentd-react", stream=True, tool_choice="none",
        messages=[{"role": "user", "content": "Say hello to Ada in one short sentence."}])
    content, final = [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        if delta.content:
            content.append(delta.content)
        step = (delta.model_extra or {}).get("agent_step")
        if step and step["type"] == "final_answer":
            final = step["answer"]
    assert final and len(content) > 1, content
    assert "".join(content) == final


def test_an_answer_caught_in_a_loop_stops_the_generation():
    looping = '{"thought": "hi", "tool_calls": [{"name": "final_answer", "arguments": {"answer": "Hello! ' + \
        "I'm a new one. " * 40
    pieces = []
    stream = AnswerArgumentStream(pieces.append)
    with pytest.raises(StopGeneration):
        for start in range(0, len(looping), 3):
            stream(looping[start:start + 3])
    assert "".join(pieces).count("I'm a new one.") == 3
    assert not in_a_loop("| model | score |\n|---------|---------|---------|") and not in_a_loop("1" * 40)


def test_rewoo_takes_one_field_of_an_earlier_json_result():
    from agentd.agents.rewoo import _substitute

    evidence = {"#E1": '{"job_id": "ftjob-1", "fine_tuned_model": "ft:smollm2-135m-instruct:agentd::ab12"}',
                "#E2": "391"}
    assert _substitute({"model": "#E1.fine_tuned_model", "tasks": ["piqa"]}, evidence) == {
        "model": "ft:smollm2-135m-instruct:agentd::ab12", "tasks": ["piqa"]}
    assert _substitute({"expression": "#E2 + 7", "note": "made #E1.fine_tuned_model"}, evidence) == {
        "expression": "391 + 7", "note": "made ft:smollm2-135m-instruct:agentd::ab12"}
    # A field the result does not have: the whole result, for the tool's own validation to explain.
    assert _substitute({"model": "#E1.missing"}, evidence)["model"]["job_id"] == "ftjob-1"


def test_a_reported_table_is_added_when_the_answer_leaves_it_out():
    from agentd.agents.answers import with_reported_table
    from agentd.agents.steps import Observation

    table = "| task | metric | base | tuned |\n|---|---|---|---|\n| support_qa | f1 | 0.07 | 0.95 |"
    report = Observation("c1", "tune_and_evaluate", json.dumps({"summary": "ft:x is better.", "table": table}))
    assert with_reported_table("ft:x is better.", [report]) == f"ft:x is better.\n\n{table}"
    assert with_reported_table(f"ft:x is better.\n\n{table}", [report]) == f"ft:x is better.\n\n{table}"
    failed = Observation("c2", "tune_and_evaluate", json.dumps({"table": table}), is_error=True)
    assert with_reported_table("Sorry.", [failed]) == "Sorry."
    assert with_reported_table("391", [Observation("c3", "calculator", "391")]) == "391"


async def test_rewoo_answers_a_request_no_tool_helps_with_from_an_empty_plan(tools, tmp_path):
    from agentd.agents.rewoo import plan_schema

    runtime = await open_runtime(tools, tmp_path)
    llm = ScriptedChatModel(structured=[{"steps": []}], chats=["Bonjour !"])
    steps, outcome = await run(runtime, "agentd-rewoo", "Say hi in French.", llm)
    assert outcome.answer == "Bonjour !" and not of(ToolCallStep, steps)
    assert [kind for kind, _ in llm.seen] == ["structured", "chat"]  # no second plan asked for
    await runtime.close()
    definitions = tools.definitions(tools.names)
    assert plan_schema(definitions, 4)["properties"]["steps"]["minItems"] == 0
    assert plan_schema(definitions, 4, first="calculator")["properties"]["steps"]["minItems"] == 1
    assert plan_schema(definitions, 4, may_be_empty=False)["properties"]["steps"]["minItems"] == 1  # "required"


def test_a_plan_s_bounded_thought_is_one_grammar_rule_however_many_tools(tools):
    """OpenVINO GenAI's grammar compiler makes a state per character of a bounded string: with the
    thought's 120-character bound copied into each tool's step, a plan over the 24 built-in tools took
    18 s to compile (all other requests in the batch wait meanwhile); written once, 1.5 s."""
    from agentd.agents.rewoo import plan_schema
    from pipelines.decoding import grammar_of
    from pipelines.engine import Constraint

    definitions = tools.definitions(tools.names)
    for schema in (plan_schema(definitions, 4), plan_schema(definitions, 4, first_only=["calculator"])):
        grammar = str(grammar_of(Constraint("json_schema", schema)))
        assert len(re.findall(r"\{0, 120\}", grammar)) == 1
