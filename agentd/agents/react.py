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

from agentd.agents.context import FINAL_ANSWER, AgentContext, approve, run_calls, step_writer
from agentd.agents.steps import Retry, Thought
from agentd.llm.chat_model import prompt


class ReactState(TypedDict, total=False):
    # Chat turns; an assistant turn's `tool_calls` are agentd.llm.chat_model.ToolCall objects.
    messages: Annotated[list[dict[str, Any]], operator.add]
    steps: int
    answer: str | None
    # Which part of a bigger graph this loop serves (a planner's sub-question id); its steps carry it.
    node: str


async def think(state: ReactState, runtime: Runtime[AgentContext], *, max_steps: int | None = None,
                max_calls: int | None = None) -> dict[str, Any]:
    ctx = runtime.context
    write = step_writer(runtime, state.get("node", ""))
    steps = state.get("steps", 0)
    if steps >= (max_steps or ctx.max_steps):
        return {"answer": await _best_effort_answer(ctx, state["messages"])}
    # A request's tool_choice shapes the first step only; after it the model chooses freely.
    tools = ctx.first_step_tools() if steps == 0 else ctx.definitions() + [FINAL_ANSWER]
    reply = await ctx.llm.act(state["messages"], tools, max_calls=max_calls or ctx.max_calls)
    if reply.error:
        write(Retry(f"the reply could not be read as tool calls ({reply.error})", steps + 1))
        return {"steps": steps + 1, "messages": [
            {"role": "assistant", "content": reply.raw[:500]},
            {"role": "user", "content": prompt("react_invalid_step", error=reply.error)}]}
    if reply.content:
        write(Thought(reply.content))
    final = next((c for c in reply.tool_calls if c.name == "final_answer"), None)
    if final is not None:
        return {"steps": steps + 1, "answer": str(final.arguments.get("answer", "")).strip()}
    return {"steps": steps + 1, "messages": [{"role": "assistant", "content": reply.content,
                                              "tool_calls": reply.tool_calls}]}


async def act(state: ReactState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    calls = state["messages"][-1]["tool_calls"]
    allowed = approve(ctx, calls)
    observations = await run_calls(ctx, calls, allowed, step_writer(runtime, state.get("node", "")))
    return {"messages": [{"role": "tool", "tool_call_id": o.call_id, "name": o.name, "content": o.content}
                         for o in observations]}


def _route(state: ReactState, *, then: str) -> str:
    if state.get("answer") is not None:
        return then
    return "act" if state["messages"][-1].get("tool_calls") else "think"


async def _best_effort_answer(ctx: AgentContext, messages: list[dict[str, Any]]) -> str:
    """Out of steps: answer from what was observed so far, without more tools."""
    return await ctx.llm.chat(messages + [{"role": "user", "content": prompt("react_best_effort")}], max_tokens=160)


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
