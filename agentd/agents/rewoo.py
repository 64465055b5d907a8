"""ReWOO: a planner writes every tool call at once as a DAG (`#E1 = tool[args]`, later steps
using earlier results), workers run the steps whose inputs are ready in parallel, a solver
answers. A plan that does not check is asked for again, with the reason, a bounded number of times."""

from __future__ import annotations

import json
import operator
import re
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agentd.agents.context import AgentContext, approve, earlier_turns, run_calls, step_writer
from agentd.agents.steps import Plan, Retry
from agentd.llm.chat_model import StructuredOutputError, ToolCall, bounded_strings, describe_tools, prompt

REFERENCE = re.compile(r"#E(\d+)")
MAX_PLAN_ATTEMPTS = 3


class RewooState(TypedDict, total=False):
    question: str
    history: Annotated[list[dict[str, str]], operator.add]
    plan: list[dict[str, Any]]
    attempts: int
    feedback: str
    evidence: dict[str, str]
    # Step id → the file its tool made: a later step's image or file argument `#E1` means that file.
    outputs: dict[str, str]
    answer: str | None


def rewoo_input(messages: list[dict[str, Any]], resuming_thread: bool) -> dict[str, Any]:
    return {"question": str(messages[-1].get("content") or ""), "plan": [], "attempts": 0, "feedback": "",
            "evidence": {}, "outputs": {}, "answer": None}


def plan_schema(tools: list[dict[str, Any]], max_steps: int, first: str | None = None) -> dict[str, Any]:
    """The plan's JSON schema; `first` names the tool the first step must call (a named tool_choice)."""
    variants = []
    for definition in tools:
        parameters = bounded_strings(definition["function"]["parameters"])
        # Any argument may instead be a reference to an earlier result.
        referable = {name: {"anyOf": [prop, {"type": "string", "pattern": r"^#E[0-9]+$"}]}
                     for name, prop in parameters.get("properties", {}).items()}
        variants.append({"type": "object", "properties": {
            "thought": {"type": "string", "maxLength": 120}, "tool": {"const": definition["function"]["name"]},
            "arguments": {**parameters, "properties": referable}},
            "required": ["thought", "tool", "arguments"], "additionalProperties": False})
    item = variants[0] if len(variants) == 1 else {"anyOf": variants}
    steps = {"type": "array", "items": item, "minItems": 1, "maxItems": max_steps}
    if first is not None:
        steps["prefixItems"] = [v for v in variants if v["properties"]["tool"]["const"] == first]
    return {"type": "object", "properties": {"steps": steps}, "required": ["steps"], "additionalProperties": False}


def check_plan(steps: list[dict[str, Any]]) -> str | None:
    """The reason a plan cannot run, or None: each reference must name an earlier step."""
    for index, step in enumerate(steps, 1):
        for number in REFERENCE.findall(json.dumps(step["arguments"])):
            if not 1 <= int(number) < index:
                return f"step #E{index} uses #E{number}, which is not an earlier step"
    return None


async def plan(state: RewooState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    attempts = state.get("attempts", 0) + 1
    tools = ctx.definitions()
    if not tools:  # tool_choice "none": nothing to plan, the solver answers
        return {"plan": [], "attempts": MAX_PLAN_ATTEMPTS, "feedback": ""}
    messages = [{"role": "system", "content": prompt("rewoo_planner", tools=describe_tools(tools))},
                *earlier_turns(state.get("history")), {"role": "user", "content": state["question"]}]
    if state.get("feedback"):
        messages.append({"role": "user", "content": prompt("rewoo_replan", problem=state["feedback"])})
    try:
        schema = plan_schema(tools, ctx.max_steps, ctx.forced_tool)
        steps = (await ctx.llm.structured(messages, schema, max_tokens=600))["steps"]
        problem = check_plan(steps) or _check_first(steps, ctx.forced_tool)
    except StructuredOutputError as error:
        steps, problem = [], str(error)
    if problem is None:
        items = [{"id": f"#E{i}", "tool": s["tool"], "arguments": s["arguments"], "thought": s["thought"]}
                 for i, s in enumerate(steps, 1)]
        runtime.stream_writer(Plan(items))
        return {"plan": items, "attempts": attempts, "feedback": ""}
    runtime.stream_writer(Retry(f"the plan could not be used: {problem}", attempts))
    return {"plan": [], "attempts": attempts, "feedback": problem}


def _check_first(steps: list[dict[str, Any]], first: str | None) -> str | None:
    # A constrained model cannot break this; an upstream held only by its prompt can.
    if first is not None and steps and steps[0]["tool"] != first:
        return f"the first step must call {first}"
    return None


def _after_plan(state: RewooState) -> str:
    if state.get("plan"):
        return "work"
    return "plan" if state.get("attempts", 0) < MAX_PLAN_ATTEMPTS else "solve"


async def work(state: RewooState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """One wave: every step whose references are all resolved runs now, concurrently."""
    ctx = runtime.context
    evidence = dict(state.get("evidence") or {})
    outputs = dict(state.get("outputs") or {})
    ready = [step for step in state["plan"] if step["id"] not in evidence
             and all(f"#E{n}" in evidence for n in REFERENCE.findall(json.dumps(step["arguments"])))]
    calls = [ToolCall(step["id"], step["tool"], _substitute(step["arguments"], evidence, outputs,
                                                            _file_parameters(ctx, step["tool"])))
             for step in ready]
    allowed = approve(ctx, calls)
    for observation in await run_calls(ctx, calls, allowed, step_writer(runtime)):
        evidence[observation.call_id] = observation.content
        made = [a["file_id"] for a in observation.artifacts if a.get("file_id")]
        if made:
            outputs[observation.call_id] = made[0]
    return {"evidence": evidence, "outputs": outputs}


def _file_parameters(ctx: AgentContext, tool: str) -> set[str]:
    """The arguments of `tool` that take an image or file."""
    if tool not in ctx.tools:
        return set()
    properties = ctx.tools.get(tool).definition()["function"]["parameters"].get("properties", {})
    return {name for name, prop in properties.items() if '"x-agentd-type"' in json.dumps(prop)}


def _after_work(state: RewooState) -> str:
    return "work" if len(state["evidence"]) < len(state["plan"]) else "solve"


async def solve(state: RewooState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    lines = [f"{step['id']} = {step['tool']}[{json.dumps(step['arguments'])}]\nResult: {state['evidence'][step['id']]}"
             for step in state.get("plan") or []]
    evidence = "\n".join(lines) or prompt("rewoo_no_plan")
    answer = await ctx.llm.chat([*earlier_turns(state.get("history")), {"role": "user", "content": prompt(
        "rewoo_solver", question=state["question"], evidence=evidence)}], max_tokens=200)
    return {"answer": answer, "history": [{"question": state["question"], "answer": answer}]}


def _substitute(arguments: dict[str, Any], evidence: dict[str, str], outputs: dict[str, str] | None = None,
                file_parameters: set[str] = frozenset()) -> dict[str, Any]:
    """References replaced by results: an image or file argument `#E1` takes the file step 1 made."""
    def value(key: str, raw: Any) -> Any:
        if not isinstance(raw, str):
            return raw
        whole = REFERENCE.fullmatch(raw.strip())
        if whole and key in file_parameters and raw.strip() in (outputs or {}):
            return outputs[raw.strip()]
        if whole:
            text = evidence[raw.strip()]
            try:
                return json.loads(text)  # a number or JSON result keeps its type
            except json.JSONDecodeError:
                return text
        return REFERENCE.sub(lambda m: evidence.get(m.group(0), m.group(0)), raw)

    return {key: value(key, raw) for key, raw in arguments.items()}


def build_rewoo_graph() -> StateGraph:
    graph = StateGraph(RewooState, context_schema=AgentContext)
    graph.add_node("plan", plan)
    graph.add_node("work", work)
    graph.add_node("solve", solve)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", _after_plan, ["plan", "work", "solve"])
    graph.add_conditional_edges("work", _after_work, ["work", "solve"])
    graph.add_edge("solve", END)
    return graph
