"""Planner-search (after MindSearch): a planner splits the question into a graph of
sub-questions by structured output (never by running model-written code); a searcher
subgraph — a short ReAct loop over the search tools — answers each, independent ones
concurrently (one `Send` per sub-question, a wave at a time); the planner combines the answers
and cites the passages the searchers found."""

from __future__ import annotations

import json
import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, Send

from agentd.agents.context import AgentContext, earlier_turns
from agentd.agents.react import ReactState, add_react_loop
from agentd.agents.steps import NodeDone, NodeStarted, Plan
from agentd.llm.chat_model import prompt

MAX_SUB_QUESTIONS = 4
SEARCHER_STEPS = 3


def _merged(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    return {**(old or {}), **new}


class PlannerState(TypedDict, total=False):
    question: str
    history: Annotated[list[dict[str, str]], operator.add]
    sub_questions: list[dict[str, Any]]
    # Sub-question id → {question, answer, citations}; each searcher adds its own.
    findings: Annotated[dict[str, dict[str, Any]], _merged]
    answer: str | None
    sources: list[str]


class SearchTask(TypedDict):
    """What the planner sends a searcher."""

    node: str  # the sub-question's id; every step the searcher makes carries it
    question: str
    known: str  # the answers of the sub-questions it depends on


class SearchFinding(TypedDict):
    """What a searcher gives back to the planner."""

    findings: Annotated[dict[str, dict[str, Any]], _merged]


class SearcherState(ReactState, SearchTask, SearchFinding, total=False):
    pass


def planner_input(messages: list[dict[str, Any]], resuming_thread: bool) -> dict[str, Any]:
    return {"question": str(messages[-1].get("content") or ""), "sub_questions": [], "answer": None, "sources": []}


def decomposition_schema(limit: int) -> dict[str, Any]:
    item = {"type": "object", "properties": {
        "question": {"type": "string", "maxLength": 160},
        "depends_on": {"type": "array", "items": {"type": "string", "pattern": r"^Q[1-9]$"}, "maxItems": 3}},
        "required": ["question", "depends_on"], "additionalProperties": False}
    return {"type": "object", "properties": {"sub_questions": {"type": "array", "items": item, "minItems": 1,
                                                               "maxItems": limit}},
            "required": ["sub_questions"], "additionalProperties": False}


async def decompose(state: PlannerState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    limit = min(MAX_SUB_QUESTIONS, ctx.max_steps)
    # Earlier questions of the thread let a follow-up ("and holidays?") be split sensibly.
    messages = [{"role": "system", "content": prompt("planner_decompose", limit=str(limit))},
                *earlier_turns(state.get("history")), {"role": "user", "content": state["question"]}]
    raw = (await ctx.llm.structured(messages, decomposition_schema(limit), max_tokens=400))["sub_questions"]
    sub_questions = []
    for index, item in enumerate(raw, 1):
        # Only earlier sub-questions may be depended on, so the graph has no cycles by construction.
        depends = sorted({d for d in item["depends_on"] if d[1:].isdigit() and 1 <= int(d[1:]) < index})
        sub_questions.append({"id": f"Q{index}", "question": item["question"].strip(), "depends_on": depends})
    runtime.stream_writer(Plan(sub_questions))
    # A thread's earlier question left its findings behind: this question starts without them.
    return {"sub_questions": sub_questions, "findings": Overwrite({})}


def wave(state: PlannerState) -> dict[str, Any]:
    """A join: the next wave is chosen once every searcher of this one has reported."""
    return {}


def _next_wave(state: PlannerState) -> list[Send] | str:
    """Every sub-question whose dependencies are answered is searched now, concurrently."""
    findings = state.get("findings") or {}
    ready = [q for q in state["sub_questions"] if q["id"] not in findings and all(d in findings for d in q["depends_on"])]
    if not ready:
        return "combine"
    return [Send("search", SearchTask(node=q["id"], question=q["question"], known="".join(
        f"\n{d} answer: {findings[d]['answer']}" for d in q["depends_on"]))) for q in ready]


async def ask(state: SearcherState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    runtime.stream_writer(NodeStarted(state["question"], node=state["node"]))
    return {"messages": [{"role": "user", "content": state["question"] + state["known"]}], "steps": 0, "answer": None}


async def report(state: SearcherState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    answer = state.get("answer") or ""
    runtime.stream_writer(NodeDone(state["question"], answer[:200], node=state["node"]))
    citations = [c for m in state["messages"] if m["role"] == "tool" for c in _citations(m["content"])]
    return {"findings": {state["node"]: {"question": state["question"], "answer": answer,
                                         "citations": list(dict.fromkeys(citations))}}}


def _citations(content: str) -> list[str]:
    """knowledge_search returns passages with a `citation` such as "[1] guide.md › Backups"."""
    try:
        passages = json.loads(content)
    except json.JSONDecodeError:
        return []
    if not isinstance(passages, list):
        return []
    found = []
    for passage in passages:
        if isinstance(passage, dict) and isinstance(passage.get("citation"), str):
            found.append(passage["citation"].split("] ", 1)[-1])
    return found


async def combine(state: PlannerState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    sources: list[str] = []
    lines = []
    for question in state["sub_questions"]:
        finding = state["findings"][question["id"]]
        numbers = []
        for citation in finding["citations"]:
            if citation not in sources:
                sources.append(citation)
            numbers.append(f"[{sources.index(citation) + 1}]")
        lines.append(f"{question['id']}. {finding['question']} → {finding['answer']} {' '.join(numbers)}".strip())
    answer = await ctx.llm.chat([{"role": "user", "content": prompt(
        "planner_combine", question=state["question"], findings="\n".join(lines))}], max_tokens=200)
    if sources:
        answer += "\n\nSources:\n" + "\n".join(f"[{n}] {source}" for n, source in enumerate(sources, 1))
    return {"answer": answer, "sources": sources, "history": [{"question": state["question"], "answer": answer}]}


def build_searcher_graph() -> StateGraph:
    """One sub-question: a ReAct loop over the search tools, kept short."""
    graph = StateGraph(SearcherState, context_schema=AgentContext, input_schema=SearchTask,
                       output_schema=SearchFinding)
    graph.add_node("ask", ask)
    add_react_loop(graph, then="report", max_steps=SEARCHER_STEPS, max_calls=1)
    graph.add_node("report", report)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", "think")
    graph.add_edge("report", END)
    return graph


def build_planner_graph() -> StateGraph:
    graph = StateGraph(PlannerState, context_schema=AgentContext)
    graph.add_node("decompose", decompose)
    graph.add_node("wave", wave)
    graph.add_node("search", build_searcher_graph().compile())
    graph.add_node("combine", combine)
    graph.add_edge(START, "decompose")
    graph.add_edge("decompose", "wave")
    graph.add_conditional_edges("wave", _next_wave, ["search", "combine"])
    graph.add_edge("search", "wave")
    graph.add_edge("combine", END)
    return graph
