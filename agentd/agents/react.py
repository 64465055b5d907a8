"""ReAct: think → call tool(s) → observe, until a final answer or the step limit.

The loop is also a part other graphs reuse (`add_react_loop`): the planner's searcher is a
short ReAct loop over the search tools.
"""

from __future__ import annotations

import operator
from functools import partial
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agentd.agents.answers import CheckedAnswer
from agentd.agents.context import (FINAL_ANSWER, SUB_ANSWER, AgentContext, StepWriter, approve, call_key, fresh_calls,
                                   run_calls, step_writer)
from agentd.agents.steps import AnswerDelta, Observation, Retry, Thought
from agentd.llm.chat_model import final_answer_of, prompt
from tools.registry import ToolRegistry

# Room for a final answer of MAX_ANSWER characters after the thought; a part of a bigger graph
# answers in a line (SUB_ANSWER).
STEP_MAX_TOKENS = 640
SUB_STEP_MAX_TOKENS = 384


class ReactState(TypedDict, total=False):
    # Chat turns; an assistant turn's `tool_calls` are agentd.llm.chat_model.ToolCall objects.
    messages: Annotated[list[dict[str, Any]], operator.add]
    steps: int
    answer: str | None
    # Which part of a bigger graph this loop serves (a planner's sub-question id); its steps carry it.
    node: str
    # Calls whose observation is no result to answer from (an error, a refusal, a repeat).
    unusable: Annotated[list[str], operator.add]
    # Whether every call of the last step repeated an earlier one: the next step may only answer
    # (told it had the result, the small model still repeated the call until its step limit).
    repeated: bool


async def think(state: ReactState, runtime: Runtime[AgentContext], *, max_steps: int | None = None,
                max_calls: int | None = None) -> dict[str, Any]:
    ctx = runtime.context
    write = step_writer(runtime, state.get("node", ""))
    # Only the run's own answer streams: a planner's searcher answers a sub-question.
    streams = not state.get("node")
    steps = state.get("steps", 0)
    if steps >= (max_steps or ctx.max_steps):
        return {"answer": await _best_effort_answer(ctx, state, write if streams else None)}
    final = FINAL_ANSWER if streams else SUB_ANSWER
    # A request's tool_choice shapes the first step only; after it the model chooses freely.
    tools = ctx.first_step_tools(final) if steps == 0 else [final] if state.get("repeated") else ctx.definitions() + [final]
    # The run's first call goes where the request points (a router, when the model has one).
    routed = await ctx.routed(str(run_turns(state["messages"])[0].get("content") or ""), tools) \
        if steps == 0 and streams else None
    only = ctx.callable_now(tools, routed)
    streamed: list[str] = []

    def stream_answer(piece: str) -> None:
        # A sub-answer is read for its loops only (an answer caught in one is cut short).
        streamed.append(piece)
        if streams:
            write(AnswerDelta(piece))

    reply = await ctx.llm.act(state["messages"], tools, max_calls=max_calls or ctx.max_calls,
                              max_tokens=STEP_MAX_TOKENS if streams else SUB_STEP_MAX_TOKENS, on_answer=stream_answer,
                              only=only)
    if reply.error and streamed:
        # The answer was going out when the step broke off (out of tokens): what the user saw stands.
        return {"steps": steps + 1, "answer": "".join(streamed)}
    if reply.error:
        write(Retry(f"the reply could not be read as tool calls ({reply.error})", steps + 1))
        return {"steps": steps + 1, "messages": [
            {"role": "assistant", "content": reply.raw[:500]},
            # Marked: the retry request is not a user turn, so the run (and its calls) goes on.
            {"role": "user", "content": prompt("react_invalid_step", error=reply.error), "feedback": True}]}
    if reply.content:
        write(Thought(reply.content))
    answer = final_answer_of(reply)
    if answer is not None:
        return {"steps": steps + 1, "answer": answer}
    return {"steps": steps + 1, "messages": [{"role": "assistant", "content": reply.content,
                                              "tool_calls": reply.tool_calls}]}


async def act(state: ReactState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    calls = state["messages"][-1]["tool_calls"]
    earlier = earlier_observations(state["messages"][:-1], ctx.tools)
    # A repeated call is not run again, so it needs no approval either.
    allowed = approve(ctx, fresh_calls(calls, earlier))
    observations = await run_calls(ctx, calls, allowed, step_writer(runtime, state.get("node", "")), earlier)
    return {"messages": [{"role": "tool", "tool_call_id": o.call_id, "name": o.name, "content": o.content}
                         for o in observations],
            "unusable": [o.call_id for o in observations if o.is_error or o.repeat_of],
            "repeated": all(o.repeat_of for o in observations)}


def run_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The turns of the current run: those after the thread's newest user turn (and that turn)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "user" and not messages[index].get("feedback"):
            return messages[index:]
    return messages


def earlier_observations(messages: list[dict[str, Any]], tools: ToolRegistry | None = None) -> dict[str, Observation]:
    """The calls this run has made, by call key, with the first observation each got. A call to a
    tool whose result changes with time (`job_status`) may be made again; one that failed is not
    (the model is told it failed already: the small model otherwise repeated a failing call until
    its step limit)."""
    turns = run_turns(messages)
    calls = {c.id: c for m in turns if m["role"] == "assistant" for c in m.get("tool_calls") or []}
    earlier: dict[str, Observation] = {}
    for message in turns:
        call = calls.get(message.get("tool_call_id", "")) if message["role"] == "tool" else None
        if call is not None and tools is not None and call.name in tools and tools.get(call.name).changing:
            continue
        if call is not None:
            failed = str(message["content"]).startswith("Error (")  # ToolResult's error text
            earlier.setdefault(call_key(call), Observation(call.id, call.name, message["content"], failed))
    return earlier


def _route(state: ReactState, *, then: str) -> str:
    if state.get("answer") is not None:
        return then
    return "act" if state["messages"][-1].get("tool_calls") else "think"


async def _best_effort_answer(ctx: AgentContext, state: ReactState, write: StepWriter | None) -> str:
    """Out of steps: answer from what was observed so far, without more tools. An answer that only
    restates the question gives way to the last result the run got."""
    messages = state["messages"]
    turns = run_turns(messages)
    unusable = set(state.get("unusable") or [])
    results = [m["content"] for m in turns if m["role"] == "tool" and m["tool_call_id"] not in unusable]
    checked = CheckedAnswer(write, str(turns[0].get("content") or "") if turns else "", results[-1] if results else "")
    reply = await ctx.llm.chat(messages + [{"role": "user", "content": prompt("react_best_effort")}],
                               max_tokens=160, on_text=checked)
    return checked.final(reply) or prompt("react_no_answer")


def react_input(messages: list[dict[str, Any]], resuming_thread: bool) -> dict[str, Any]:
    """A new thread takes the whole conversation; a known thread only the newest user turn."""
    return {"messages": messages[-1:] if resuming_thread else messages, "steps": 0, "answer": None}


def add_react_loop(graph: StateGraph, *, then: str, max_steps: int | None = None,
                   max_calls: int | None = None) -> None:
    """Add the `think` ⇄ `act` nodes to `graph`; once there is an answer it goes on to `then`.

    `max_steps` and `max_calls` override the run's limits (the planner keeps its searchers short).
    """
    graph.add_node("think", partial(think, max_steps=max_steps, max_calls=max_calls))
    graph.add_node("act", act)
    graph.add_conditional_edges("think", partial(_route, then=then), ["act", "think", then])
    graph.add_edge("act", "think")


def build_react_graph() -> StateGraph:
    graph = StateGraph(ReactState, context_schema=AgentContext)
    add_react_loop(graph, then=END)
    graph.add_edge(START, "think")
    return graph
