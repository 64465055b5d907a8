"""Model-free scoring of an agent run against a task's expected tool sequence and argument checks."""

from __future__ import annotations

import math
from typing import Any

from agentd.agents.steps import Observation, Retry, Step, ToolCallStep
from agentd.llm.chat_model import ToolCall
from tools.base import ToolError
from tools.builtin.calculator import evaluate
from tools.registry import ToolRegistry


def _matches(expect: dict[str, Any], call: ToolCall, observation: Observation | None) -> bool:
    if call.name != expect["tool"]:
        return False
    if "value" in expect:
        try:
            value = evaluate(str(call.arguments.get("expression", "")))
        except (ToolError, TypeError, ValueError):
            return False
        return math.isclose(float(value), float(expect["value"]), rel_tol=1e-6, abs_tol=1e-9)
    if "output_contains" in expect:
        return observation is not None and not observation.is_error and expect["output_contains"] in observation.content
    if "query_any" in expect:
        query = str(call.arguments.get("query", "")).lower()
        return any(word in query for word in expect["query_any"])
    return True


def score(task: dict[str, Any], steps: list[Step], tools: ToolRegistry) -> dict[str, Any]:
    calls = [s.call for s in steps if isinstance(s, ToolCallStep)]
    observations = {s.call_id: s for s in steps if isinstance(s, Observation)}
    retries = sum(isinstance(s, Retry) for s in steps)
    valid = 0
    for call in calls:
        if call.name in tools:
            try:
                tools.get(call.name).validate(call.arguments)
                valid += 1
            except (ToolError, ValueError, TypeError):
                pass
    remaining = list(task["expect"])
    for call in calls:
        if remaining and _matches(remaining[0], call, observations.get(call.id)):
            remaining.pop(0)
    return {"solved": not remaining, "calls": len(calls), "valid_calls": valid, "attempts": len(calls) + retries}
