"""ReAct: think → call tool(s) → observe, until a final answer or the step limit."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agentd.agents.context import FINAL_ANSWER, AgentContext, approve, run_calls
from agentd.agents.steps import Retry, Thought
from agentd.llm.chat_model import ToolCallRequest


class ReactState(TypedDict, total=False):
    messages: Annotated[list[dict[str, Any]], operator.add]
    steps: int
    answer: str | None


async def think(state: ReactState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    steps = state.get("steps", 0)
    if steps >= ctx.max_steps:
        return {"answer": await _best_effort_answer(ctx, state["messages"])}
    reply = await ctx.llm.act(state["messages"], ctx.definitions() + [FINAL_ANSWER], max_calls=ctx.max_calls)
    if reply.error:
        ctx.emit(Retry(f"the reply could not be read as tool calls ({reply.error})", steps + 1))
        return {"steps": steps + 1, "messages": [
            {"role": "assistant", "content": reply.raw[:500]},
            {"role": "user", "content": f"That reply was not valid: {reply.error}. Reply with the JSON step format."}]}
    if reply.content:
        ctx.emit(Thought(reply.content))
    final = next((c for c in reply.tool_calls if c.name == "final_answer"), None)
    if final is not None:
        return {"steps": steps + 1, "answer": str(final.arguments.get("answer", "")).strip()}
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls]
    return {"steps": steps + 1, "messages": [{"role": "assistant", "content": reply.content, "tool_calls": calls}]}


async def act(state: ReactState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    calls = [ToolCallRequest(c["id"], c["name"], c["arguments"]) for c in state["messages"][-1]["tool_calls"]]
    allowed = approve(ctx, calls)
    observations = await run_calls(ctx, calls, allowed)
    return {"messages": [{"role": "tool", "tool_call_id": o.call_id, "name": o.name, "content": o.content}
                         for o in observations]}


def _route(state: ReactState) -> str:
    if state.get("answer") is not None:
        return END
    return "act" if state["messages"][-1].get("tool_calls") else "think"


async def _best_effort_answer(ctx: AgentContext, messages: list[dict[str, Any]]) -> str:
    """Out of steps: answer from what was observed so far, without more tools."""
    note = {"role": "user", "content": "Stop using tools. Answer the original question now, in one or two "
                                       "sentences, from the results above."}
    return await ctx.llm.chat(messages + [note], max_tokens=160)


def react_input(messages: list[dict[str, Any]], resuming_thread: bool) -> dict[str, Any]:
    """A new thread takes the whole conversation; a known thread only the newest user turn."""
    return {"messages": messages[-1:] if resuming_thread else messages, "steps": 0, "answer": None}


def build_react_graph() -> StateGraph:
    graph = StateGraph(ReactState, context_schema=AgentContext)
    graph.add_node("think", think)
    graph.add_node("act", act)
    graph.add_edge(START, "think")
    graph.add_conditional_edges("think", _route, ["act", "think", END])
    graph.add_edge("act", "think")
    return graph
