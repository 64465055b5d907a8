"""Runs any agent graph: the model it thinks with, threads persisted by LangGraph's SQLite
checkpointer (one namespace per agent type), human approval through `interrupt`, step and time
limits, cancellation, and a stored trace per run. Steps come from the graph's custom stream."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.errors import GraphRecursionError
from langgraph.types import Command

from agentd.agents.context import AgentContext, RunClock, ToolChoice
from agentd.agents.answers import with_reported_table
from agentd.agents.files import RunFiles, link_artifacts
from agentd.agents.planner import build_planner_graph, planner_input
from agentd.agents.react import build_react_graph, react_input
from agentd.agents.rewoo import build_rewoo_graph, rewoo_input
from agentd.agents.runs import RunStore
from agentd.agents.steps import AnswerDelta, ApprovalRequired, FinalAnswer, RunFailed, Step
from agentd.llm.chat_model import ChatModel, StructuredOutputError, ToolCall
from agentd.llm.models import chat_model_for
from pipelines.engine import EngineError, TextEngine
from pipelines.registry import Lease, ModelRegistry
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
    "agentd-rewoo": AgentType("agentd-rewoo", "ReWOO: plan every tool call at once, run them, then answer or "
                              "call what the plan could not", build_rewoo_graph, rewoo_input),
    "agentd-planner": AgentType("agentd-planner", "Planner-search: split into sub-questions, search each, combine",
                                build_planner_graph, planner_input),
}

_APPROVE = re.compile(r"^\s*(approve|approved|yes|y|ok|okay|go ahead|allow)\b", re.I)
_REJECT = re.compile(r"^\s*(reject|rejected|no|n|deny|stop|cancel)\b", re.I)


@dataclass(frozen=True)
class AgentLimits:
    max_steps: int = 6
    max_calls: int = 3
    # Long-running tools (Tool.long_running) do not count against it: their own timeout bounds them.
    time_limit_s: float = 300.0


@dataclass
class AgentRun:
    """One run of an agent. Iterate it for the steps; the runtime records in `status`, `answer`
    and `steps` how it went (status: running, completed, requires_approval, failed, cancelled)."""

    id: str
    thread_id: str
    agent: str
    model: str
    status: str = "running"
    answer: str | None = None
    steps: list[Step] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    _stream: AsyncIterator[Step] | None = field(default=None, repr=False)
    # The served model's hold on its engine: an on-demand brain is not unloaded mid-run.
    _lease: Lease | None = field(default=None, repr=False)

    def __aiter__(self) -> AsyncIterator[Step]:
        return self._stream

    async def aclose(self) -> None:
        """Stop the run (a client that went away); its status becomes `cancelled`."""
        await self._stream.aclose()
        if self._lease is not None:  # a run closed before its first step never reached its end
            self._lease.release()


class AgentRuntime:
    """Agent execution: picks the chat model, runs the graph, streams and records its steps.

    Args:
        tools: the registry the agents' calls go to.
        data_dir: where the thread checkpoints and run traces live.
        models: the served models; agents think with `model_id` among them.
        model_id: the agents' model (the server passes `--agent-model` or its first model).
    """

    def __init__(self, tools: ToolRegistry, data_dir: Path, models: ModelRegistry | None = None, model_id: str = "",
                 limits: AgentLimits = AgentLimits(), search_tools: tuple[str, ...] = ("knowledge_search", "web_search")):
        self.tools = tools
        self.models = models
        self.model_id = model_id
        self.limits = limits
        self.search_tools = search_tools
        self.runs = RunStore(Path(data_dir) / "runs.sqlite")
        self._checkpoints_path = Path(data_dir) / "agent_threads.sqlite"
        self._resources = AsyncExitStack()
        self._graphs: dict[str, Any] = {}
        # One chat model per served engine, so what it learns (an upstream that refuses native
        # tool calling) lasts across runs; a reloaded engine is another object and gets a new one.
        self._chat_models: dict[str, tuple[TextEngine, ChatModel]] = {}

    async def open(self) -> None:
        self.runs.mark_interrupted()
        connection = await self._resources.enter_async_context(aiosqlite.connect(self._checkpoints_path))
        # Graph state holds ToolCall objects; the serializer is told they are ours to load back.
        saver = AsyncSqliteSaver(connection, serde=JsonPlusSerializer(allowed_msgpack_modules=[ToolCall]))
        self._graphs = {agent_id: agent.build().compile(checkpointer=saver) for agent_id, agent in AGENT_TYPES.items()}

    async def close(self) -> None:
        await self._resources.aclose()
        self.runs.close()

    async def chat_model(self) -> ChatModel:
        """The model agents think with; EngineError 503 while it loads or when it failed to."""
        llm, lease = await self._brain()
        lease.release()
        return llm

    async def _brain(self) -> tuple[ChatModel, Lease]:
        if self.models is None or not self.model_id:
            raise EngineError("no model is served for agents to think with", status=503, param="model")
        try:
            lease = await self.models.lease(self.model_id)
        except EngineError as error:
            raise EngineError(f"the agents' {error.message}", error.status, param="model") from None
        engine = lease.engine
        cached = self._chat_models.get(self.model_id)
        if cached is None or cached[0] is not engine:
            cached = self._chat_models[self.model_id] = (engine, chat_model_for(engine, self.model_id))
        return cached[1], lease

    async def start(self, agent_id: str, messages: list[dict[str, Any]], *, thread_id: str | None = None,
                    llm: ChatModel | None = None, base_url: str | None = None,
                    tool_choice: ToolChoice = "auto") -> AgentRun:
        """A run of `agent_id` on the conversation `messages`, continuing `thread_id` if given.

        `llm` replaces the served model (benchmarks comparing decoders, unit tests with a
        scripted model). `base_url` is the server's /v1 URL as the client reached it: the
        artifacts' URLs start with it. `tool_choice` is checked by the caller against
        `tool_names(agent_id)`. Raises EngineError (503) when the agents' model cannot be used now.
        """
        lease = None
        if llm is None:
            llm, lease = await self._brain()
        run = AgentRun(id=f"run-{uuid.uuid4().hex}", thread_id=thread_id or f"thread_{uuid.uuid4().hex[:24]}",
                       agent=agent_id, model=llm.id, tool_choice=tool_choice, _lease=lease)
        run._stream = self._execute(run, messages, llm, RunFiles(base_url))
        return run

    def tool_names(self, agent_id: str) -> list[str]:
        """The server tools `agent_id` may call (what a named tool_choice may name)."""
        names = list(self.search_tools) if agent_id == "agentd-planner" else self.tools.names
        return [name for name in names if name in self.tools]

    def context(self, agent_id: str, llm: ChatModel, files: RunFiles | None = None,
                tool_choice: ToolChoice = "auto") -> AgentContext:
        names = list(self.search_tools) if agent_id == "agentd-planner" else None
        return AgentContext(llm=llm, tools=self.tools, clock=RunClock(self.limits.time_limit_s, self.tools),
                            tool_names=names, max_steps=self.limits.max_steps, max_calls=self.limits.max_calls,
                            files=files or RunFiles(), tool_choice=tool_choice)

    async def _execute(self, run: AgentRun, messages: list[dict[str, Any]], llm: ChatModel,
                       files: RunFiles) -> AsyncIterator[Step]:
        graph = self._graphs[run.agent]
        # Each agent type keeps its own threads: the same client thread id names a different
        # checkpoint for agentd-react and agentd-rewoo, whose states have nothing in common.
        config = {"configurable": {"thread_id": f"{run.agent}/{run.thread_id}"},
                  "recursion_limit": 4 * self.limits.max_steps + 20}
        last_text = str(messages[-1].get("content") or "") if messages else ""
        ctx = self.context(run.agent, llm, files, run.tool_choice)
        for message in messages:
            ctx.learn(str(message.get("content") or ""), by_person=message.get("role") == "user")
        self.runs.start(run.id, run.thread_id, run.agent, run.model, last_text, run.tool_choice)
        try:
            snapshot = await graph.aget_state(config)
            pending = _pending_calls(snapshot)
            if not pending or _APPROVE.match(last_text) or _REJECT.match(last_text):
                if pending:
                    graph_input: Any = Command(resume={"approved": bool(_APPROVE.match(last_text))})
                else:
                    graph_input = AGENT_TYPES[run.agent].make_input(messages, bool(snapshot.values))
                async with ctx.clock, aclosing(graph.astream(graph_input, config, context=ctx,
                                                              stream_mode="custom", subgraphs=True)) as stream:
                    async for _namespace, step in stream:
                        # The answer's pieces go out as they come; the trace keeps the FinalAnswer.
                        yield step if isinstance(step, AnswerDelta) else self._record(run, step)
                snapshot = await graph.aget_state(config)
                pending = _pending_calls(snapshot)
        except Exception as error:  # a failing model or a bug in a node ends this run, not the server
            known = (EngineError, StructuredOutputError, GraphRecursionError)
            if ctx.clock.expired:
                message = ctx.clock.stopped()
            elif isinstance(error, known):
                message = getattr(error, "message", None) or str(error)
            else:
                message = f"{type(error).__name__}: {error}"
            final: Step = self._record(run, RunFailed(message))
            self._finish(run, "failed", error=message)
        except BaseException:
            # The client went away (or the server is stopping): the graph stopped with the stream.
            self._finish(run, "cancelled")
            raise
        else:
            if pending:
                final = self._record(run, ApprovalRequired(pending, run.thread_id))
                self._finish(run, "requires_approval")
            else:
                answer = link_artifacts(with_reported_table(snapshot.values.get("answer") or "", run.steps), files)
                final = self._record(run, FinalAnswer(answer, snapshot.values.get("sources") or []))
                run.answer = answer
                self._finish(run, "completed", answer=answer)
        # The outcome is recorded before the last step goes out: a client that leaves as soon as
        # it has that step (closing this generator at the yield) leaves no run marked running.
        yield final

    def _record(self, run: AgentRun, step: Step) -> Step:
        run.steps.append(step)
        self.runs.add_step(run.id, step)
        return step

    def _finish(self, run: AgentRun, status: str, answer: str | None = None, error: str | None = None) -> None:
        run.status = status
        if run._lease is not None:
            run._lease.release()
        self.runs.finish(run.id, status, answer, error)


def _pending_calls(snapshot: Any) -> list[ToolCall]:
    """The calls waiting for a person's approval in a thread, if it is paused."""
    interrupts = [i for task in snapshot.tasks for i in task.interrupts]
    return interrupts[0].value["calls"] if interrupts else []
