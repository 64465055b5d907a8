"""Runs any agent graph: threads persisted by LangGraph's SQLite checkpointer, human approval
through `interrupt`, step and time limits, cancellation, and a stored trace per run."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.errors import GraphRecursionError
from langgraph.types import Command

from agentd.agents.context import AgentContext
from agentd.agents.planner import build_planner_graph, planner_input
from agentd.agents.react import build_react_graph, react_input
from agentd.agents.rewoo import build_rewoo_graph, rewoo_input
from agentd.agents.runs import RunStore
from agentd.agents.steps import ApprovalRequired, FinalAnswer, RunFailed, Step
from agentd.llm.chat_model import ChatModel, StructuredOutputError
from pipelines.engine import EngineError
from tools.registry import ToolRegistry


@dataclass(frozen=True)
class AgentType:
    id: str
    description: str
    build: Callable[[], Any]
    make_input: Callable[[list[dict[str, Any]], bool], dict[str, Any]]


AGENT_TYPES = {
    "agentd-react": AgentType("agentd-react", "ReAct: think, call tools, observe, repeat", build_react_graph,
                              react_input),
    "agentd-rewoo": AgentType("agentd-rewoo", "ReWOO: plan every tool call at once, run them, then answer",
                              build_rewoo_graph, rewoo_input),
    "agentd-planner": AgentType("agentd-planner", "Planner-search: split into sub-questions, search each, combine",
                                build_planner_graph, planner_input),
}

_APPROVE = re.compile(r"^\s*(approve|approved|yes|y|ok|okay|go ahead|allow)\b", re.I)
_REJECT = re.compile(r"^\s*(reject|rejected|no|n|deny|stop|cancel)\b", re.I)


@dataclass(frozen=True)
class AgentLimits:
    max_steps: int = 6
    max_calls: int = 3
    time_limit_s: float = 300.0


@dataclass
class RunOutcome:
    """Filled while a run streams; read when it ends."""

    run_id: str
    thread_id: str
    answer: str | None = None
    status: str = "running"
    steps: list[Step] = field(default_factory=list)


class AgentRuntime:
    def __init__(self, tools: ToolRegistry, data_dir: Path, limits: AgentLimits = AgentLimits(),
                 search_tools: tuple[str, ...] = ("knowledge_search", "web_search")):
        self.tools = tools
        self.limits = limits
        self.search_tools = search_tools
        self.runs = RunStore(Path(data_dir) / "runs.sqlite")
        self._checkpoints_path = Path(data_dir) / "agent_threads.sqlite"
        self._saver_context = None
        self._graphs: dict[str, Any] = {}

    async def open(self) -> None:
        self.runs.mark_interrupted()
        self._saver_context = AsyncSqliteSaver.from_conn_string(str(self._checkpoints_path))
        saver = await self._saver_context.__aenter__()
        self._graphs = {agent_id: agent.build().compile(checkpointer=saver) for agent_id, agent in AGENT_TYPES.items()}

    async def close(self) -> None:
        if self._saver_context is not None:
            await self._saver_context.__aexit__(None, None, None)
            self._saver_context = None
        self.runs.close()

    def context(self, agent_id: str, llm: ChatModel) -> AgentContext:
        names = list(self.search_tools) if agent_id == "agentd-planner" else None
        return AgentContext(llm=llm, tools=self.tools, tool_names=names, max_steps=self.limits.max_steps,
                            max_calls=self.limits.max_calls)

    async def run(self, agent_id: str, messages: list[dict[str, Any]], llm: ChatModel, *,
                  thread_id: str | None = None, outcome: RunOutcome | None = None) -> AsyncIterator[Step]:
        """Stream the steps of one run; `outcome` (if given) holds the answer and status at the end."""
        graph = self._graphs[agent_id]
        outcome = outcome or RunOutcome(run_id=f"run_{secrets.token_hex(12)}", thread_id="")
        outcome.thread_id = thread_id or f"thread_{secrets.token_hex(12)}"
        config = {"configurable": {"thread_id": outcome.thread_id},
                  "recursion_limit": 4 * self.limits.max_steps + 20}
        snapshot = await graph.aget_state(config)
        pending = [i for task in snapshot.tasks for i in task.interrupts]
        last_text = str(messages[-1].get("content") or "") if messages else ""
        queue: asyncio.Queue[Step | None] = asyncio.Queue()
        ctx = replace(self.context(agent_id, llm), emit=queue.put_nowait)
        self.runs.start(outcome.run_id, outcome.thread_id, agent_id, llm.id, last_text)

        if pending and not (_APPROVE.match(last_text) or _REJECT.match(last_text)):
            step = ApprovalRequired(pending[0].value["calls"], outcome.thread_id)
            yield self._record(outcome, step)
            self._finish(outcome, "requires_approval")
            return
        if pending:
            graph_input: Any = Command(resume={"approved": bool(_APPROVE.match(last_text))})
        else:
            graph_input = AGENT_TYPES[agent_id].make_input(messages, bool(snapshot.values))

        async def execute() -> None:
            try:
                await graph.ainvoke(graph_input, config, context=ctx)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(execute())
        try:
            async with asyncio.timeout(self.limits.time_limit_s):
                while (step := await queue.get()) is not None:
                    yield self._record(outcome, step)
                await task
        except TimeoutError:
            task.cancel()
            yield self._record(outcome, RunFailed(f"the run took longer than its {self.limits.time_limit_s:g} s limit"))
            self._finish(outcome, "failed", error="time limit")
            return
        except Exception as error:  # a failing model or a bug in a node ends this run, not the server
            known = (EngineError, StructuredOutputError, GraphRecursionError)
            message = (getattr(error, "message", None) or str(error)) if isinstance(error, known) \
                else f"{type(error).__name__}: {error}"
            task.cancel()
            yield self._record(outcome, RunFailed(message))
            self._finish(outcome, "failed", error=message)
            return
        except BaseException:
            # The client went away (or the server is stopping): stop the graph with it.
            task.cancel()
            self._finish(outcome, "cancelled")
            raise

        snapshot = await graph.aget_state(config)
        pending = [i for task_ in snapshot.tasks for i in task_.interrupts]
        if pending:
            yield self._record(outcome, ApprovalRequired(pending[0].value["calls"], outcome.thread_id))
            self._finish(outcome, "requires_approval")
            return
        answer = snapshot.values.get("answer") or ""
        yield self._record(outcome, FinalAnswer(answer, snapshot.values.get("sources") or []))
        outcome.answer = answer
        self._finish(outcome, "completed", answer=answer)

    def _record(self, outcome: RunOutcome, step: Step) -> Step:
        outcome.steps.append(step)
        self.runs.add_step(outcome.run_id, step)
        return step

    def _finish(self, outcome: RunOutcome, status: str, answer: str | None = None, error: str | None = None) -> None:
        outcome.status = status
        self.runs.finish(outcome.run_id, status, answer, error)
