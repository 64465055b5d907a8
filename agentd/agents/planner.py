"""Planner-search (after MindSearch): a planner splits the question into a graph of
sub-questions by structured output (never by running model-written code); a searcher
sub-agent — ReAct over the search tools — answers each, independent ones concurrently; the
planner combines the answers and cites the passages the searchers found."""

from __future__ import annotations

import asyncio
import json
import operator
from dataclasses import replace
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agentd.agents.context import AgentContext, earlier_turns
from agentd.agents.react import build_react_graph
from agentd.agents.steps import NodeDone, NodeStarted, Observation, Plan, Step
from agentd.llm.chat_model import prompt

MAX_SUB_QUESTIONS = 4
SEARCHER_STEPS = 3
_searcher = build_react_graph().compile()


class PlannerState(TypedDict, total=False):
    question: str
    history: Annotated[list[dict[str, str]], operator.add]
    sub_questions: list[dict[str, Any]]
    findings: dict[str, dict[str, Any]]
    answer: str | None
    sources: list[str]


def planner_input(messages: list[dict[str, Any]], resuming_thread: bool) -> dict[str, Any]:
    return {"question": str(messages[-1].get("content") or ""), "sub_questions": [], "findings": {},
            "answer": None, "sources": []}


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
    ctx.emit(Plan(sub_questions))
    return {"sub_questions": sub_questions, "findings": {}}


async def search(state: PlannerState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """One wave: every sub-question whose dependencies are answered is searched, concurrently."""
    ctx = runtime.context
    findings = dict(state.get("findings") or {})
    ready = [q for q in state["sub_questions"] if q["id"] not in findings and all(d in findings for d in q["depends_on"])]
    results = await asyncio.gather(*(_answer(ctx, q, findings) for q in ready))
    for question, finding in zip(ready, results):
        findings[question["id"]] = finding
    return {"findings": findings}


async def _answer(ctx: AgentContext, question: dict[str, Any], findings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    node = question["id"]
    ctx.emit(NodeStarted(question["question"], node=node))
    citations: list[str] = []

    def forward(step: Step) -> None:
        if isinstance(step, Observation) and not step.is_error:
            citations.extend(_citations(step.content))
        step.node = node
        ctx.emit(step)

    known = "".join(f"\n{d} answer: {findings[d]['answer']}" for d in question["depends_on"])
    sub_context = replace(ctx, emit=forward, max_steps=SEARCHER_STEPS, max_calls=1)
    state = await _searcher.ainvoke({"messages": [{"role": "user", "content": question["question"] + known}],
                                     "steps": 0, "answer": None}, context=sub_context)
    answer = state.get("answer") or ""
    ctx.emit(NodeDone(question["question"], answer[:200], node=node))
    return {"question": question["question"], "answer": answer, "citations": list(dict.fromkeys(citations))}


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


def _after_search(state: PlannerState) -> str:
    return "search" if len(state["findings"]) < len(state["sub_questions"]) else "combine"


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


def build_planner_graph() -> StateGraph:
    graph = StateGraph(PlannerState, context_schema=AgentContext)
    graph.add_node("decompose", decompose)
    graph.add_node("search", search)
    graph.add_node("combine", combine)
    graph.add_edge(START, "decompose")
    graph.add_edge("decompose", "search")
    graph.add_conditional_edges("search", _after_search, ["search", "combine"])
    graph.add_edge("combine", END)
    return graph
