"""What every graph's nodes share: the model, the tools, the limits, and how calls are run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from langgraph.types import interrupt

from agentd.agents.steps import Observation, Step, ToolCallStep, ToolProgress
from agentd.llm.chat_model import ChatModel, ToolCallRequest
from tools.context import ToolContext
from tools.registry import ToolRegistry

FINAL_ANSWER = {"type": "function", "function": {
    "name": "final_answer", "description": "Give the user the final answer.",
    "parameters": {"type": "object", "properties": {"answer": {"type": "string", "description": "the answer"}},
                   "required": ["answer"], "additionalProperties": False}}}


@dataclass
class AgentContext:
    """Run-time context of a graph (not checkpointed: rebuilt for every request).

    Attributes:
        llm: the chat model the agent thinks with.
        tools: the registry the agent's calls go to.
        tool_names: the tools this agent may use (None: all).
        max_steps: model calls a ReAct loop may make; plan size for ReWOO and planner.
        max_calls: tool calls one ReAct step may make at once (parallel calls).
        emit: where steps go (LangGraph's stream writer, or a test's list.append).
    """

    llm: ChatModel
    tools: ToolRegistry
    tool_names: list[str] | None = None
    max_steps: int = 6
    max_calls: int = 3
    emit: Callable[[Step], None] = field(default=lambda step: None)

    def definitions(self) -> list[dict[str, Any]]:
        names = [n for n in (self.tool_names or self.tools.names) if n in self.tools]
        return self.tools.definitions(names)


def approve(ctx: AgentContext, calls: list[ToolCallRequest]) -> set[str]:
    """Pause for a person when a call needs approval; returns the ids of the calls that may run.

    `interrupt` raises on the first pass (the run ends, the checkpoint keeps the state); when
    the thread is resumed it returns the decision and the node runs again from the top, so this
    must come before any call is executed.
    """
    needing = [c for c in calls if c.name in ctx.tools and ctx.tools.get(c.name).requires_approval]
    if not needing:
        return {c.id for c in calls}
    decision = interrupt({"calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in needing]})
    approved = bool(decision.get("approved")) if isinstance(decision, dict) else bool(decision)
    rejected = set() if approved else {c.id for c in needing}
    return {c.id for c in calls} - rejected


async def run_calls(ctx: AgentContext, calls: list[ToolCallRequest], allowed: set[str]) -> list[Observation]:
    """Run the allowed calls concurrently; a refused or unknown call becomes an observation too."""
    for call in calls:
        ctx.emit(ToolCallStep(call.id, call.name, call.arguments))
    runnable = [c for c in calls if c.id in allowed]
    results = {r.call_id: r for r in await asyncio.gather(*(
        ctx.tools.invoke(c.name, c.arguments, call_id=c.id, context=_reporting(ctx, c)) for c in runnable))}
    observations = []
    for call in calls:
        result = results.get(call.id)
        if result is None:
            observation = Observation(call.id, call.name, "A person rejected this call; it was not run.", True)
        else:
            artifacts = [{"file_id": a.file_id, "kind": a.kind, "mime_type": a.mime_type} for a in result.artifacts]
            observation = Observation(call.id, call.name, result.observation(), not result.ok, artifacts)
        ctx.emit(observation)
        observations.append(observation)
    return observations


def _reporting(ctx: AgentContext, call: ToolCallRequest) -> ToolContext:
    """The registry's context, with progress from a long-running tool streamed as steps."""
    return replace(ctx.tools.context, on_progress=lambda update: ctx.emit(ToolProgress(call.id, call.name, update)))


def earlier_turns(history: list[dict[str, str]] | None, keep: int = 3) -> list[dict[str, str]]:
    """The last questions and answers of a thread, as chat turns (ReWOO and planner state keep them)."""
    turns = []
    for earlier in (history or [])[-keep:]:
        turns += [{"role": "user", "content": earlier["question"]}, {"role": "assistant", "content": earlier["answer"]}]
    return turns
