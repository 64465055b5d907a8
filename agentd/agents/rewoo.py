"""ReWOO: a planner writes every tool call at once as a DAG (`#E1 = tool[args]`, later steps
using earlier results), workers run the steps whose inputs are ready in parallel, then the model,
shown the calls and their results, answers or makes the calls the plan could not write (a replanner,
as in plan-and-execute). A plan that does not check is asked for again, with the reason, a bounded
number of times; a run with no plan, or out of steps, is answered by the solver."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Collection, Mapping
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agentd.agents.answers import CheckedAnswer
from agentd.agents.context import (FINAL_ANSWER, AgentContext, approve, call_key, earlier_turns, fresh_calls, run_calls,
                                   step_writer)
from agentd.agents.grounding import id_unread, leading_json, number_unread, unfilled_groups
from agentd.agents.react import STEP_MAX_TOKENS
from agentd.agents.steps import Observation, Plan, Retry, Thought
from agentd.llm.chat_model import (THOUGHT, ChatModel, StructuredOutputError, ToolCall, bounded_strings, final_answer_of,
                                   prompt)
from agentd.llm.tool_calls import one_of
from tools.schema import SAID_AS

REFERENCE = re.compile(r"#E(\d+)")
# A reference to one field of an earlier result: `#E1.fine_tuned_model` (the model a fine-tune made).
FIELD_REFERENCE = re.compile(r"#E(\d+)(?:\.([A-Za-z_]\w*))?")
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
    # Call key → the id of the step that ran it: an identical later step reuses its evidence.
    calls_made: dict[str, str]
    # Step id → the arguments it ran with (references resolved): what the follow-up shows the model.
    ran: dict[str, dict[str, Any]]
    # Steps whose evidence is an error (or a refusal): no result to answer from.
    failed: list[str]
    answer: str | None


def rewoo_input(messages: list[dict[str, Any]], resuming_thread: bool) -> dict[str, Any]:
    return {"question": str(messages[-1].get("content") or ""), "plan": [], "attempts": 0, "feedback": "",
            "evidence": {}, "outputs": {}, "calls_made": {}, "ran": {}, "failed": [], "answer": None}


def plan_schema(tools: list[dict[str, Any]], max_steps: int, first: str | None = None,
                may_be_empty: bool = True, first_only: Collection[str] | None = None) -> dict[str, Any]:
    """The plan's JSON schema; `first` names the tool the first step must call (a named tool_choice),
    `first_only` the tools it may call (the router's choice, less those it cannot call yet); an empty
    plan is the answer to a request no tool helps with, unless a call is required."""
    variants = {}
    references = _references(max_steps)
    for definition in tools:
        # No step, first or later, can write a group of which the run has read nothing for any: the
        # follow-up calls the tool once a result gives one.
        if unfilled_groups(definition["function"]["parameters"]) and definition["function"]["name"] != first:
            continue
        parameters = bounded_strings(definition["function"]["parameters"])
        referable = {name: _referable(prop, references) for name, prop in parameters.get("properties", {}).items()}
        variants[definition["function"]["name"]] = {"type": "object", "properties": {
            "thought": {"$ref": "#/$defs/thought"}, "tool": {"const": definition["function"]["name"]},
            "arguments": {**parameters, "properties": referable}},
            "required": ["thought", "tool", "arguments"], "additionalProperties": False}
    allowed_first = {first} if first is not None else None if first_only is None else set(first_only)
    firsts = None if allowed_first is None else [name for name in variants if name in allowed_first]
    steps: dict[str, Any] = {"type": "array", "minItems": 0 if may_be_empty and first is None else 1,
                             "maxItems": max_steps}
    # The thought's bound written once: OpenVINO GenAI's grammar compiler makes a state per character of a
    # bounded string, and a copy in each tool's step made a plan take 18 s to compile, not 1.5 s.
    schema = {"type": "object", "properties": {"steps": steps}, "required": ["steps"], "additionalProperties": False,
              "$defs": {"thought": dict(THOUGHT)}}
    if firsts == [] and may_be_empty:  # no tool can be called first: the plan can only be empty
        steps["maxItems"] = 0
    if not firsts or set(firsts) >= set(variants):
        steps["items"] = one_of(list(variants.values()))
        return schema
    # Each tool's step is written once and referred to from both places: the first step's choice
    # written out again beside the others' made OpenVINO GenAI's grammar compiler stall for over
    # 30 minutes; shared, it compiles as fast as the plan without it.
    schema["$defs"] |= {f"step_{name}": variant for name, variant in variants.items()}
    steps["prefixItems"] = [one_of([{"$ref": f"#/$defs/step_{name}"} for name in firsts])]
    steps["items"] = one_of([{"$ref": f"#/$defs/step_{name}"} for name in variants])
    return schema


def _references(max_steps: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a plan of `max_steps` may write to refer to an earlier step: a field of its result (`#E1.x`, the
    name bounded: a pattern without end lets a small model write on until its tokens run out), and the whole
    step (a picture or file argument: the file that step made). Only steps that can come before another are
    named: a plan of five wrote `#E15`."""
    earlier = "|".join(str(number) for number in range(max(max_steps - 1, 1), 0, -1))
    return ({"type": "string", "pattern": rf"^#E({earlier})(\.[A-Za-z_][A-Za-z0-9_]{{0,39}})?$"},
            {"type": "string", "pattern": rf"^#E({earlier})$"})


def _referable(prop: dict[str, Any], references: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """What a plan may write for an argument: its value or a reference to an earlier result, of a kind
    that result can be. An id the run has not read can only be a reference (a job an earlier step
    started), and so can a number that is never a guess with none read (a face's box: cropped at a
    made-up one when it could be a number; left out of the plan, the face's crop became a rotation); a
    picture or file, a whole step's (the file it made); a yes-or-no or a choice among named
    values, only itself: given any, a second-stage adapter passed `"keep_aspect": "#E1.size"`."""
    field, step = references
    file = _holds_file(prop)
    if id_unread(prop) or number_unread(prop):
        return step if file else field
    if file:
        return {"anyOf": [prop, step]}
    if _named_value(prop):
        return prop
    return {"anyOf": [prop, field]}


def _named_value(prop: dict[str, Any]) -> bool:
    branches = [branch for branch in prop.get("anyOf", [prop]) if branch.get("type") != "null"]
    marked = any(key.startswith("x-agentd-") and key != SAID_AS for key in prop)
    return bool(branches) and not marked and all(
        branch.get("type") == "boolean"
        or (branch.get("type") in ("string", None) and ("enum" in branch or "const" in branch))
        for branch in branches)


def check_plan(steps: list[dict[str, Any]]) -> str | None:
    """The reason a plan cannot run, or None: each reference must name an earlier step."""
    for index, step in enumerate(steps, 1):
        for number in REFERENCE.findall(json.dumps(step["arguments"])):
            if not 1 <= int(number) < index:
                return f"step #E{index} uses #E{number}, which is not an earlier step"
    return None


def files_passed_on(steps: list[dict[str, Any]], file_arguments: Mapping[str, Collection[str]],
                    file_makers: Collection[str]) -> tuple[list[dict[str, Any]], str | None]:
    """The plan with each picture or file argument (`file_arguments`: their names per tool) that names a
    step whose tool makes none (not in `file_makers`) given the file that step read: in "look at how tall
    it is, then resize it", `it` is the picture measured, not the measurement. When that step read no
    file either (a sum passed as a picture), the reason the plan cannot run."""
    passed = [dict(step, arguments=dict(step["arguments"])) for step in steps]
    for index, step in enumerate(passed, 1):
        for name in file_arguments.get(step["tool"], ()):
            whole = FIELD_REFERENCE.fullmatch(str(step["arguments"].get(name, "")))
            earlier = passed[int(whole[1]) - 1] if whole else None
            if earlier is None or earlier["tool"] in file_makers:
                continue
            read = [earlier["arguments"][key] for key in file_arguments.get(earlier["tool"], ())
                    if isinstance(earlier["arguments"].get(key), str)]
            if not read:
                return steps, (f"step #E{index} passes #E{whole[1]} as its {name}, but {earlier['tool']} "
                               f"makes no file: pass the id of a file the conversation has")
            step["arguments"][name] = read[0]
    return passed, None


async def plan(state: RewooState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    attempts = state.get("attempts", 0) + 1
    tools = ctx.definitions()
    if not tools:  # tool_choice "none": nothing to plan, the solver answers
        return {"plan": [], "attempts": MAX_PLAN_ATTEMPTS, "feedback": ""}
    messages = planner_messages(ctx.llm, tools, state.get("history"), state["question"], state.get("feedback"))
    # The first step goes where the request points (the router, when the model has one) and cannot
    # be a tool whose required argument only an earlier step could give.
    first_only = ctx.callable_now(tools, await ctx.routed(state["question"], tools))
    try:
        schema = plan_schema(tools, ctx.max_steps, ctx.forced_tool, may_be_empty=ctx.tool_choice != "required",
                             first_only=first_only)
        steps = (await ctx.llm.structured(messages, schema, max_tokens=600))["steps"]
        problem = check_plan(steps) or _check_first(steps, ctx.forced_tool)
        if problem is None:
            steps, problem = files_passed_on(steps, {s["tool"]: _file_parameters(ctx, s["tool"]) for s in steps},
                                             _file_makers(ctx))
    except StructuredOutputError as error:
        steps, problem = [], str(error)
    if problem is None and not steps:  # nothing to look up: the solver answers from the question
        return {"plan": [], "attempts": MAX_PLAN_ATTEMPTS, "feedback": ""}
    if problem is None:
        items = [{"id": f"#E{i}", "tool": s["tool"], "arguments": s["arguments"], "thought": s["thought"]}
                 for i, s in enumerate(steps, 1)]
        runtime.stream_writer(Plan(items))
        return {"plan": items, "attempts": attempts, "feedback": ""}
    runtime.stream_writer(Retry(f"the plan could not be used: {problem}", attempts))
    return {"plan": [], "attempts": attempts, "feedback": problem}


def planner_messages(llm: ChatModel, tools: list[dict[str, Any]], history: list[dict[str, str]] | None,
                     question: str, feedback: str | None = None) -> list[dict[str, str]]:
    """What the planner reads (the tool-use adapter is trained on exactly this)."""
    messages = [{"role": "system", "content": prompt("rewoo_planner", tools=llm.list_tools(tools))},
                *earlier_turns(history), {"role": "user", "content": question}]
    if feedback:
        messages.append({"role": "user", "content": prompt("rewoo_replan", problem=feedback)})
    return messages


def solver_messages(plan: list[dict[str, Any]], evidence: dict[str, str], history: list[dict[str, str]] | None,
                    question: str) -> list[dict[str, str]]:
    """What the solver reads: every step and its result verbatim (the adapter is trained on exactly this)."""
    lines = [f"{step['id']} = {step['tool']}[{json.dumps(step['arguments'])}]\nResult: {evidence[step['id']]}"
             for step in plan]
    return [*earlier_turns(history), {"role": "user", "content": prompt(
        "rewoo_solver", question=question, evidence="\n".join(lines) or prompt("rewoo_no_plan"))}]


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
                                                            _file_parameters(ctx, step["tool"]),
                                                            _number_parameters(ctx, step["tool"])))
             for step in ready]
    failed = list(state.get("failed") or [])
    calls_made = dict(state.get("calls_made") or {})
    ran = dict(state.get("ran") or {}) | {call.id: call.arguments for call in calls}
    earlier = {key: Observation(step_id, key.split(":", 1)[0], evidence[step_id], step_id in failed)
               for key, step_id in calls_made.items()}
    allowed = approve(ctx, fresh_calls(calls, earlier))
    for call, observation in zip(calls, await run_calls(ctx, calls, allowed, step_writer(runtime), earlier,
                                                        _reuse_evidence), strict=True):
        evidence[observation.call_id] = observation.content
        calls_made.setdefault(call_key(call), observation.repeat_of or observation.call_id)
        if observation.is_error:
            failed.append(observation.call_id)
        made = [a["file_id"] for a in observation.artifacts if a.get("file_id")]
        if made or observation.repeat_of in outputs:
            outputs[observation.call_id] = made[0] if made else outputs[observation.repeat_of]
    return {"evidence": evidence, "outputs": outputs, "calls_made": calls_made, "ran": ran, "failed": failed}


def _reuse_evidence(call: ToolCall, earlier: Observation) -> Observation:
    """A plan step identical to an earlier one takes that step's result instead of running again."""
    return Observation(call.id, call.name, earlier.content, earlier.is_error, repeat_of=earlier.call_id)


def _file_parameters(ctx: AgentContext, tool: str) -> set[str]:
    """The arguments of `tool` that take an image or file."""
    return {name for name, prop in _properties(ctx, tool).items() if _holds_file(prop)}


def _number_parameters(ctx: AgentContext, tool: str) -> set[str]:
    """The arguments of `tool` that take a number."""
    return {name for name, prop in _properties(ctx, tool).items()
            if any(branch.get("type") in ("integer", "number") for branch in prop.get("anyOf", [prop]))}


def _properties(ctx: AgentContext, tool: str) -> dict[str, Any]:
    if tool not in ctx.tools:
        return {}
    return ctx.tools.get(tool).definition()["function"]["parameters"].get("properties", {})


def _file_makers(ctx: AgentContext) -> set[str]:
    """The tools whose result may hold a picture or file (or says nothing of its kind)."""
    return {tool.name for tool in ctx.tools
            if tool.output_schema is None or _holds_file(tool.output_schema)}


def _holds_file(schema: dict[str, Any]) -> bool:
    """Whether a schema is, or holds somewhere inside (a list's items, a tuple's member), a picture or file."""
    return '"x-agentd-type"' in json.dumps(schema)


def _after_work(state: RewooState) -> str:
    return "work" if len(state["evidence"]) < len(state["plan"]) else "follow_up"


async def follow_up(state: RewooState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """The plan has run: shown its calls and their results as a ReAct run's turns, the model answers (the
    answer streams) or calls what the plan could not have written — a value only a result gives ("look up
    the allowance, then divide it by 5"), a failed call mended, a part of the request the plan left out.
    Its calls become further steps of the plan; out of steps, a repeated call or an unreadable reply
    leaves the answer to the solver."""
    ctx = runtime.context
    plan = state["plan"]
    if len(plan) >= ctx.max_steps:
        return {}
    tools = ctx.definitions() + [FINAL_ANSWER]
    # Judged as the solver's is: an answer restating the question gives way to the last result.
    checked = CheckedAnswer(step_writer(runtime), state["question"], _last_result(state))
    reply = await ctx.llm.act(_as_react_turns(state), tools, max_calls=ctx.max_calls, max_tokens=STEP_MAX_TOKENS,
                              on_answer=checked, only=ctx.callable_now(tools))
    if reply.error and checked.sent:  # out of tokens mid-answer: what the user saw stands
        return _answered(state, checked.sent)
    if reply.error:
        return {}
    if reply.content:
        step_writer(runtime)(Thought(reply.content))
    answer = final_answer_of(reply)
    if answer is not None:
        return _answered(state, checked.final(answer) or prompt("react_no_answer"))
    made = set(state.get("calls_made") or {})
    calls = [call for call in fresh_calls(reply.tool_calls, {}) if call_key(call) not in made]
    calls = calls[:ctx.max_steps - len(plan)]
    if not calls:
        return {}
    added = [{"id": f"#E{index}", "tool": call.name, "arguments": call.arguments, "thought": reply.content}
             for index, call in enumerate(calls, len(plan) + 1)]
    return {"plan": plan + added}


def _as_react_turns(state: RewooState) -> list[dict[str, Any]]:
    """The run so far as the ReAct loop's messages: the question, then each step's call (as it ran) and result.
    A step that repeated an earlier one is shown once: shown a plan that measured a picture twice (its second
    step's thought "Resize to 500."), the model took the resize as done and answered."""
    turns: list[dict[str, Any]] = [*earlier_turns(state.get("history")), {"role": "user", "content": state["question"]}]
    ran = state.get("ran") or {}
    shown: set[str] = set()
    for step in state["plan"]:
        call = ToolCall(step["id"], step["tool"], ran.get(step["id"], step["arguments"]))
        if call_key(call) in shown:
            continue
        shown.add(call_key(call))
        result = state["evidence"][step["id"]]
        turns += [{"role": "assistant", "content": step["thought"], "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": step["id"], "name": step["tool"], "content": result}]
    return turns


def _answered(state: RewooState, answer: str) -> dict[str, Any]:
    return {"answer": answer, "history": [{"question": state["question"], "answer": answer}]}


def _last_result(state: RewooState) -> str:
    """The last result a step got that is no error: what an answer restating the question gives way to."""
    evidence, failed = state.get("evidence") or {}, set(state.get("failed") or [])
    results = [evidence[step["id"]] for step in state.get("plan") or [] if step["id"] in evidence
               and step["id"] not in failed]
    return results[-1] if results else ""


def _after_follow_up(state: RewooState) -> str:
    if state.get("answer"):
        return END
    return "work" if len(state["evidence"]) < len(state["plan"]) else "solve"


async def solve(state: RewooState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    evidence = state.get("evidence") or {}
    # An answer that restates the question gives way to the last result the plan got.
    checked = CheckedAnswer(step_writer(runtime), state["question"], _last_result(state))
    reply = await ctx.llm.chat(solver_messages(state.get("plan") or [], evidence, state.get("history"),
                                               state["question"]), max_tokens=200, on_text=checked)
    return _answered(state, checked.final(reply) or prompt("react_no_answer"))


def _substitute(arguments: dict[str, Any], evidence: dict[str, str], outputs: dict[str, str] | None = None,
                file_parameters: set[str] = frozenset(), number_parameters: set[str] = frozenset()) -> dict[str, Any]:
    """References replaced by results: an image or file argument `#E1` takes the file step 1 made,
    and `#E1.fine_tuned_model` takes one field of a result that is a JSON object (a job summary). A
    number argument takes the number of that name (of its own name for a bare `#E1`) in the result, at
    its top or else the first inside it: a crop's `x: "#E1"` after detect_faces is the first face's."""
    def resolved(step_id: str, name: str | None, key: str = "") -> Any:
        text = evidence[step_id]
        if key in number_parameters:
            # The JSON a result starts with: a face's boxes, before the line naming the picture.
            read = leading_json(text)
            found = _number_named(read[0], name or key) if read else None
            if found is not None:
                return found
        try:
            result = json.loads(text)  # a number or JSON result keeps its type
        except json.JSONDecodeError:
            return text
        if name is not None and isinstance(result, dict) and name in result:
            return result[name]
        return result

    def value(key: str, raw: Any) -> Any:
        if not isinstance(raw, str):
            return raw
        whole = FIELD_REFERENCE.fullmatch(raw.strip())
        if whole and not whole.group(2) and key in file_parameters and raw.strip() in (outputs or {}):
            return outputs[raw.strip()]
        if whole:
            return resolved(f"#E{whole.group(1)}", whole.group(2), key)

        def inline(match: re.Match) -> str:
            if f"#E{match.group(1)}" not in evidence:
                return match.group(0)
            if not match.group(2):
                return evidence[f"#E{match.group(1)}"]
            if _field_missing(evidence[f"#E{match.group(1)}"], match.group(2)):  # "#E1.Then …": prose
                return evidence[f"#E{match.group(1)}"] + match.group(0)[len(f"#E{match.group(1)}"):]
            found = resolved(f"#E{match.group(1)}", match.group(2))
            return found if isinstance(found, str) else json.dumps(found)

        return FIELD_REFERENCE.sub(inline, raw)

    return {key: value(key, raw) for key, raw in arguments.items()}


def _number_named(value: Any, name: str) -> int | float | None:
    """The number called `name` in a JSON value: a field of the object itself, else the first one inside it, in
    the order written."""
    if isinstance(value, dict):
        own = value.get(name)
        if isinstance(own, int | float) and not isinstance(own, bool):
            return own
        inside = value.values()
    elif isinstance(value, list):
        inside = value
    else:
        return None
    return next((found for item in inside if (found := _number_named(item, name)) is not None), None)


def _field_missing(text: str, name: str) -> bool:
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        return True
    return not (isinstance(result, dict) and name in result)


def build_rewoo_graph() -> StateGraph:
    graph = StateGraph(RewooState, context_schema=AgentContext)
    graph.add_node("plan", plan)
    graph.add_node("work", work)
    graph.add_node("follow_up", follow_up)
    graph.add_node("solve", solve)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges("plan", _after_plan, ["plan", "work", "solve"])
    graph.add_conditional_edges("work", _after_work, ["work", "follow_up"])
    graph.add_conditional_edges("follow_up", _after_follow_up, ["work", "solve", END])
    graph.add_edge("solve", END)
    return graph
