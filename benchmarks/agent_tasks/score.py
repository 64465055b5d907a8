"""Model-free scoring of an agent run against a task's expected tool sequence and argument checks.

A task (one line of tasks.jsonl) says what a good run does:

    {"id": "f03", "category": "finetune", "request": "Teach smollm2 my tickets in {tickets}.",
     "expect": [{"tool": "finetune", "args": {"model": {"contains": "smollm2"}, "training_file": "{tickets}"}}],
     "alternatives": [[{"tool": "tune_and_evaluate", ...}]],
     "answer_contains": ["ft:"]}

- `expect` is the tool calls, in order, that must appear among the run's calls (other calls may
  come between them); `[]` means the request needs no tool: the run must answer without a call.
- `alternatives` are other sequences that solve it as well (one workflow call, or the same
  work done step by step).
- An expected step names its `tool` (a name, or a list of acceptable names) and may check:
  `args` (below), `value` (a calculator expression's value), `output_contains` (the call's
  observation), `query_any` (a search query holds one of these words), `swap` (two argument
  names whose values may come the other way round), `ok` (the observation is not an error).
- An argument check is a plain value (equal: strings ignoring surrounding space, numbers as
  numbers), or one of `{"contains": "s" | ["s", ...]}` (case-insensitive; a list argument
  matches if one item does), `{"one_of": [v, ...]}`, `{"number": n}`, `{"present": true}`,
  `{"from": "finetune", "key": "fine_tuned_model"}` (equal to that key's value in an earlier
  observation of that tool in the same run), `{"any": [check, ...]}` or `{"all": [check, ...]}`.
- `answer_contains`: strings the final answer must hold (case-insensitive; a list inside the
  list means one of them).
- `{name}` anywhere in a request or a check is a placeholder run.py fills in (an uploaded
  picture's file id, a job id) before the run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from agentd.agents.steps import FinalAnswer, Observation, Retry, Step, ToolCallStep
from agentd.llm.chat_model import ToolCall
from tools.base import ToolError
from tools.builtin.calculator import evaluate
from tools.context import reset_context, use_context
from tools.registry import ToolRegistry

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
Earlier = list[tuple[ToolCall, Observation | None]]


def fill(value: Any, placeholders: Mapping[str, str]) -> Any:
    """`value` with every `{name}` the mapping knows replaced, inside strings, lists and dicts."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: placeholders.get(m[1], m[0]), value)
    if isinstance(value, list):
        return [fill(item, placeholders) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, placeholders) for key, item in value.items()}
    return value


def sequences(task: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every tool sequence that solves the task: `expect` first, then the alternatives."""
    return [task["expect"], *task.get("alternatives", [])]


def score(task: dict[str, Any], steps: list[Step], tools: ToolRegistry,
          placeholders: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Whether the run solved the task, and how many of its call attempts were schema-valid."""
    task = fill(task, placeholders or {})
    calls = [s.call for s in steps if isinstance(s, ToolCallStep)]
    observations = {s.call_id: s for s in steps if isinstance(s, Observation)}
    answers = [s.answer for s in steps if isinstance(s, FinalAnswer)]
    retries = sum(isinstance(s, Retry) for s in steps)
    valid = sum(_schema_valid(call, tools) for call in calls)
    history = [(call, observations.get(call.id)) for call in calls]
    if not task["expect"]:
        done = not calls and bool(answers and answers[-1].strip())
    else:
        done = any(_follows(sequence, history) for sequence in sequences(task))
    if done and task.get("answer_contains"):
        done = bool(answers) and all(_answer_has(answers[-1], wanted) for wanted in task["answer_contains"])
    return {"solved": done, "calls": len(calls), "valid_calls": valid, "attempts": len(calls) + retries}


def _schema_valid(call: ToolCall, tools: ToolRegistry) -> bool:
    if call.name not in tools:
        return False
    # In the registry's context, as when the call ran: a picture's file id resolves in its file store.
    token = use_context(tools.context)
    try:
        tools.get(call.name).validate(call.arguments)
    except (ToolError, ValueError, TypeError):
        return False
    finally:
        reset_context(token)
    return True


def _follows(sequence: list[dict[str, Any]], history: Earlier) -> bool:
    """The expected steps appear in order among the calls (the earliest match for each)."""
    position = 0
    for expected in sequence:
        while position < len(history) and not _matches(expected, history[position], history[:position]):
            position += 1
        if position == len(history):
            return False
        position += 1
    return True


def _matches(expect: dict[str, Any], done: tuple[ToolCall, Observation | None], earlier: Earlier) -> bool:
    call, observation = done
    names = expect["tool"] if isinstance(expect["tool"], list) else [expect["tool"]]
    if call.name not in names:
        return False
    if expect.get("ok") and (observation is None or observation.is_error):
        return False
    if "value" in expect and not _has_value(call, expect["value"]):
        return False
    if "output_contains" in expect and not (observation is not None and not observation.is_error
                                            and expect["output_contains"] in observation.content):
        return False
    if "query_any" in expect:
        query = str(call.arguments.get("query", "")).lower()
        if not any(word in query for word in expect["query_any"]):
            return False
    if "args" in expect:
        arguments = call.arguments
        if _arguments_match(expect["args"], arguments, earlier):
            return True
        first, second = expect.get("swap", (None, None))
        if first is None:
            return False
        swapped = {**arguments, first: arguments.get(second), second: arguments.get(first)}
        return _arguments_match(expect["args"], swapped, earlier)
    return True


def _has_value(call: ToolCall, wanted: float) -> bool:
    try:
        value = evaluate(str(call.arguments.get("expression", "")))
    except (ToolError, TypeError, ValueError):
        return False
    return math.isclose(float(value), float(wanted), rel_tol=1e-6, abs_tol=1e-9)


def _arguments_match(checks: dict[str, Any], arguments: dict[str, Any], earlier: Earlier) -> bool:
    return all(check_argument(check, arguments.get(name), earlier) for name, check in checks.items())


def check_argument(check: Any, value: Any, earlier: Earlier = ()) -> bool:
    """One argument against one check (see the module docstring for the kinds of check)."""
    if isinstance(check, dict) and "from" in check:
        return value is not None and any(_same(found, value) for found in _observed(check, earlier))
    if isinstance(check, dict) and len(check) == 1:
        kind, wanted = next(iter(check.items()))
        if kind == "contains":
            return _contains(value, wanted if isinstance(wanted, list) else [wanted])
        if kind == "one_of":
            return any(_same(option, value) for option in wanted)
        if kind == "number":
            return _number(value) is not None and math.isclose(_number(value), float(wanted), rel_tol=1e-6)
        if kind == "present":
            return (value not in (None, "", [])) == bool(wanted)
        if kind == "any":
            return any(check_argument(one, value, earlier) for one in wanted)
        if kind == "all":
            return all(check_argument(one, value, earlier) for one in wanted)
    return _same(check, value)


def _same(wanted: Any, value: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(value, bool):
        return wanted is value
    if isinstance(wanted, int | float):
        return _number(value) is not None and math.isclose(_number(value), float(wanted), rel_tol=1e-9)
    if isinstance(wanted, str):
        return isinstance(value, str) and value.strip() == wanted.strip()
    if isinstance(wanted, list):
        return isinstance(value, list) and len(value) == len(wanted) and all(map(_same, wanted, value))
    return wanted == value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _contains(value: Any, pieces: list[str]) -> bool:
    texts = [str(item) for item in value] if isinstance(value, list) else [] if value is None else [str(value)]
    return any(piece.lower() in text.lower() for text in texts for piece in pieces)


def _observed(check: dict[str, Any], earlier: Earlier) -> list[Any]:
    """Every value of `check["key"]` in the successful earlier observations of `check["from"]`."""
    found: list[Any] = []
    for call, observation in earlier:
        if call.name == check["from"] and observation is not None and not observation.is_error:
            for document in _json_parts(observation.content):
                found += _values_of(document, check["key"])
    return found


def _json_parts(text: str) -> list[Any]:
    """The JSON in an observation: the whole text, or else each line that parses."""
    try:
        return [json.loads(text)]
    except ValueError:
        pass
    parts = []
    for line in text.splitlines():
        try:
            parts.append(json.loads(line))
        except ValueError:
            continue
    return parts


def _values_of(document: Any, key: str) -> list[Any]:
    if isinstance(document, dict):
        own = [document[key]] if key in document else []
        return own + [v for item in document.values() for v in _values_of(item, key)]
    if isinstance(document, list):
        return [v for item in document for v in _values_of(item, key)]
    return []


def _answer_has(answer: str, wanted: str | list[str]) -> bool:
    options = wanted if isinstance(wanted, list) else [wanted]
    return any(option.lower() in answer.lower() for option in options)
