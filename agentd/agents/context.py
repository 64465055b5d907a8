"""What every graph's nodes share: the model, the tools, the limits, the run's clock, and how
calls are run. Nodes write their steps to LangGraph's custom stream (`step_writer`)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agentd.agents.files import RunFiles
from agentd.agents.grounding import RunReading, unfillable
from agentd.agents.steps import Observation, Step, ToolCallStep, ToolProgress
from agentd.llm.chat_model import MAX_ANSWER, MAX_STRING, ChatModel, ToolCall, prompt
from tools.files import FileNotFound
from tools.registry import ToolRegistry

log = logging.getLogger(__name__)


def final_answer_tool(max_length: int = MAX_ANSWER) -> dict[str, Any]:
    """The final_answer definition ReAct steps may call, its answer at most `max_length` characters."""
    return {"type": "function", "function": {
        "name": "final_answer", "description": "Give the user the final answer.",
        "parameters": {"type": "object", "properties": {"answer": {"type": "string", "description": "the answer",
                                                                   "maxLength": max_length}},
                       "required": ["answer"], "additionalProperties": False}}}


# Long enough to quote what the tools returned (a comparison table, say).
FINAL_ANSWER = final_answer_tool()
# A part of a bigger graph (a planner's searcher) answers in a line: the graph writes the answer.
SUB_ANSWER = final_answer_tool(MAX_STRING)

StepWriter = Callable[[Step], None]
# How a graph words the observation of a call identical to an earlier one: (the call, the earlier observation).
Repeat = Callable[[ToolCall, Observation], Observation]

# A request's `tool_choice` as the agents read it: OpenAI's words, or the one tool the first call must use.
ToolChoice = Literal["auto", "none", "required"] | dict[str, str]


class RunClock:
    """The run's time limit, which long-running tools step outside of.

    A long-running tool (a fine-tune that waits for its job, say) is bounded by its own
    timeout; while one runs, the run's deadline is paused, so an agent does not cut off the
    tool it called. Use as `async with clock:` around the run.
    """

    def __init__(self, limit_s: float, tools: ToolRegistry):
        self.limit_s = limit_s
        self.long_running = sorted(t.name for t in tools if t.long_running)
        self.running: Counter[str] = Counter()  # tools in flight, named when the limit stops the run
        self.expired = False  # whether the limit stopped the run
        self._timeout: asyncio.Timeout | None = None
        self._paused = 0
        self._remaining = 0.0

    async def __aenter__(self) -> RunClock:
        self._timeout = asyncio.timeout(self.limit_s)
        await self._timeout.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        timeout, self._timeout = self._timeout, None
        self.expired = timeout.expired()
        return await timeout.__aexit__(*exc_info)

    @contextmanager
    def tool_running(self, name: str, long_running: bool) -> Iterator[None]:
        self.running[name] += 1
        if long_running:
            self._pause()
        stopped = False
        try:
            yield
        except asyncio.CancelledError:
            stopped = True  # the run is stopping: the call stays listed as what was running
            raise
        finally:
            if long_running:
                self._resume()
            if not stopped:
                self.running[name] -= 1

    def _pause(self) -> None:
        self._paused += 1
        if self._paused == 1 and self._ticking():
            self._remaining = self._timeout.when() - asyncio.get_running_loop().time()
            self._timeout.reschedule(None)

    def _resume(self) -> None:
        self._paused -= 1
        if self._paused == 0 and self._ticking():
            self._timeout.reschedule(asyncio.get_running_loop().time() + max(self._remaining, 0.0))

    def _ticking(self) -> bool:
        # Outside the run (a tool finishing after its run was cancelled) or past the deadline,
        # the timeout can no longer be moved.
        return self._timeout is not None and not self._timeout.expired()

    def stopped(self) -> str:
        """Why the run stopped, for the RunFailed step."""
        names = sorted(name for name, count in self.running.items() if count > 0)
        doing = f"while running {', '.join(names)}" if names else "while the model was working"
        such_as = f" such as {', '.join(self.long_running)}" if self.long_running else ""
        return (f"the run took longer than its {self.limit_s:g} s limit {doing} (time in long-running "
                f"tools{such_as} does not count against it: their own timeouts bound them)")


@dataclass
class AgentContext:
    """Run-time context of a graph (not checkpointed: rebuilt for every request).

    Attributes:
        llm: the chat model the agent thinks with.
        tools: the registry the agent's calls go to.
        clock: the run's time limit, paused while a long-running tool works.
        tool_names: the tools this agent may use (None: all).
        max_steps: model calls a ReAct loop may make; plan size for ReWOO and planner.
        max_calls: tool calls one ReAct step may make at once (parallel calls).
        files: the file ids the run knows (pictures sent, artifacts made), with their URLs.
        tool_choice: "none" (answer without tools), "required" (the first step calls a tool),
            {"name": X} (the first call is X), or "auto".
        reading: all the run has read (with `files`): what grounds the tools' arguments.
    """

    llm: ChatModel
    tools: ToolRegistry
    clock: RunClock
    tool_names: list[str] | None = None
    max_steps: int = 6
    max_calls: int = 3
    files: RunFiles = field(default_factory=RunFiles)
    tool_choice: ToolChoice = "auto"
    reading: RunReading = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reading = RunReading(self.files)

    def definitions(self) -> list[dict[str, Any]]:
        """The tools the model may call now: their file arguments narrowed to the ids the run knows,
        their ids, optional numbers and named choices to those it has read (see grounding)."""
        if self.tool_choice == "none":
            return []
        names = [n for n in (self.tool_names or self.tools.names) if n in self.tools]
        return [self.reading.definition(d) for d in self.tools.definitions(names)]

    def learn(self, text: str, by_person: bool = False) -> None:
        """What the run reads (the conversation; `by_person`: a user's turn): file ids, ids, numbers, paths
        and words it may pass on, and what the person asked for."""
        self.reading.learn(text, self._stored_kind, by_person)

    def _stored_kind(self, file_id: str) -> str | None:
        store = self.tools.context.file_store
        try:
            stored = store.get(file_id) if store is not None else None
        except FileNotFound:
            return None
        return None if stored is None else "image" if stored.mime_type.startswith("image/") else "file"

    def read_result(self, text: str) -> None:
        """What a tool returned: ids, numbers, paths and words the run may pass on (its files come as
        artifacts)."""
        self.reading.read_result(text)

    @property
    def forced_tool(self) -> str | None:
        """The tool a named `tool_choice` makes the first call use."""
        return self.tool_choice.get("name") if isinstance(self.tool_choice, dict) else None

    async def routed(self, request: str, tools: list[dict[str, Any]]) -> set[str] | None:
        """The names of `tools` a run's first call may go to, by the thinking model's router (answering
        without a tool stays allowed); None: all of them (no router, or a tool_choice decides)."""
        if self.forced_tool or self.llm.router is None or not request.strip():
            return None
        names = [t["function"]["name"] for t in tools]
        callable_names = [n for n in names if n != FINAL_ANSWER["function"]["name"]]
        try:
            kept = await asyncio.to_thread(self.llm.router.first_tools, request, callable_names)
        except Exception as error:  # a router that cannot run (its embedding model missing) narrows nothing
            log.warning("the tool router failed (%s: %s); the first call may go to any tool", type(error).__name__, error)
            return None
        return kept | (set(names) - set(callable_names))

    def callable_now(self, tools: list[dict[str, Any]], routed: set[str] | None = None) -> set[str] | None:
        """The names of `tools` a step may call: those `routed` allows (None: all), less any with a
        required argument that can only be an id the run has not read — a job id, a picture (see
        grounding.unfillable); None: all of `tools`. A tool the request's tool_choice names stays callable."""
        blocked = {t["function"]["name"] for t in tools if unfillable(t["function"]["parameters"])} - {self.forced_tool}
        if not blocked:
            return routed
        names = {t["function"]["name"] for t in tools} if routed is None else routed
        return names - blocked

    def first_step_tools(self, final: dict[str, Any] = FINAL_ANSWER) -> list[dict[str, Any]]:
        """What the first step of a ReAct loop may call: the forced tool alone, any tool but
        final_answer when a call is required, else every tool and `final` (a final_answer)."""
        tools = self.definitions()
        forced = [t for t in tools if t["function"]["name"] == self.forced_tool]
        if forced:
            return forced
        return tools if self.tool_choice == "required" and tools else tools + [final]


def step_writer(runtime: Runtime[AgentContext], node: str = "") -> StepWriter:
    """Where a graph node's steps go: LangGraph's custom stream, marked with the part of the
    graph that made them (a planner's sub-question id; empty for the main loop)."""

    def write(step: Step) -> None:
        step.node = node or step.node
        runtime.stream_writer(step)

    return write


def approve(ctx: AgentContext, calls: list[ToolCall]) -> set[str]:
    """Pause for a person when a call needs approval; returns the ids of the calls that may run.

    `interrupt` raises on the first pass (the run ends, the checkpoint keeps the state); when
    the thread is resumed it returns the decision and the node runs again from the top, so this
    must come before any call is executed.
    """
    needing = [c for c in calls if c.name in ctx.tools and ctx.tools.get(c.name).requires_approval]
    if not needing:
        return {c.id for c in calls}
    decision = interrupt({"calls": needing})
    approved = bool(decision.get("approved")) if isinstance(decision, dict) else bool(decision)
    rejected = set() if approved else {c.id for c in needing}
    return {c.id for c in calls} - rejected


def call_key(call: ToolCall) -> str:
    """Calls with the same key are the same call: same tool, same arguments as canonical JSON."""
    return f"{call.name}:{json.dumps(call.arguments, sort_keys=True, ensure_ascii=False, separators=(',', ':'))}"


def fresh_calls(calls: list[ToolCall], earlier: dict[str, Observation]) -> list[ToolCall]:
    """The calls that will really run: none already made (in `earlier`, or before in `calls`)."""
    seen = set(earlier)
    fresh = []
    for call in calls:
        if call_key(call) not in seen:
            seen.add(call_key(call))
            fresh.append(call)
    return fresh


def repeated_call_notice(call: ToolCall, earlier: Observation) -> Observation:
    """A ReAct model that repeats a call is told it already has the result (or the error), and given it again."""
    if earlier.is_error:
        return Observation(call.id, call.name, prompt("repeated_failed_call", tool=call.name, error=earlier.content),
                           True, repeat_of=earlier.call_id)
    return Observation(call.id, call.name, prompt("repeated_call", tool=call.name, result=earlier.content),
                       repeat_of=earlier.call_id)


async def run_calls(ctx: AgentContext, calls: list[ToolCall], allowed: set[str], write: StepWriter,
                    earlier: dict[str, Observation] | None = None,
                    repeat: Repeat = repeated_call_notice) -> list[Observation]:
    """Run the allowed calls concurrently; a refused or unknown call becomes an observation too.

    A call identical to one in `earlier` (call key → its observation) or to one before it in
    `calls` is not run again: `repeat` makes its observation from the earlier one. Its
    ToolCallStep and Observation still stream, so a client sees what the model asked for.
    """
    for call in calls:
        write(ToolCallStep(call))
    made = dict(earlier or {})
    runnable = [c for c in fresh_calls(calls, made) if c.id in allowed]
    results = {r.call_id: r for r in await asyncio.gather(*(_invoke(ctx, c, write) for c in runnable))}
    observations = []
    for call in calls:
        result, key = results.get(call.id), call_key(call)
        if result is not None:
            artifacts = [_artifact(ctx, a) for a in result.artifacts]
            observation = Observation(call.id, call.name, result.observation(), not result.ok, artifacts)
            ctx.read_result(observation.content)
        elif key in made:
            observation = repeat(call, made[key])
        else:
            observation = Observation(call.id, call.name, prompt("call_rejected"), True)
        made.setdefault(key, observation)
        write(observation)
        observations.append(observation)
    return observations


def _artifact(ctx: AgentContext, artifact: Any) -> dict[str, Any]:
    """An artifact as an observation lists it; a stored one gets its URL and becomes a known id."""
    listed = {"file_id": artifact.file_id, "kind": artifact.kind, "mime_type": artifact.mime_type,
              "filename": artifact.filename}
    if artifact.file_id:
        listed["url"] = ctx.files.add_artifact(artifact.file_id, artifact.kind, artifact.filename)
    if artifact.width:
        listed.update(width=artifact.width, height=artifact.height)
    return listed


async def _invoke(ctx: AgentContext, call: ToolCall, write: StepWriter):
    # The registry's context, with progress from a long-running tool streamed as steps.
    reporting = replace(ctx.tools.context, on_progress=lambda update: write(ToolProgress(call.id, call.name, update)))
    long_running = call.name in ctx.tools and ctx.tools.get(call.name).long_running
    with ctx.clock.tool_running(call.name, long_running):
        return await ctx.tools.invoke(call.name, call.arguments, call_id=call.id, context=reporting)


def earlier_turns(history: list[dict[str, str]] | None, keep: int = 3) -> list[dict[str, str]]:
    """The last questions and answers of a thread, as chat turns (ReWOO and planner state keep them)."""
    turns = []
    for earlier in (history or [])[-keep:]:
        turns += [{"role": "user", "content": earlier["question"]}, {"role": "assistant", "content": earlier["answer"]}]
    return turns
