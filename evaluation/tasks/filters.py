"""Answer extraction: lm-evaluation-harness's filter steps, applied to one model output."""

from __future__ import annotations

import re
from typing import Any

FALLBACK = "[invalid]"  # the harness's marker for an output the regex found nothing in


def apply_filters(steps: list[dict[str, Any]], outputs: list[str]) -> tuple[list[str], bool]:
    """Run the steps over a sample's outputs; returns (filtered outputs, whether all parsed)."""
    parsed = True
    for step in steps:
        function = step["function"]
        if function == "regex":
            outputs = [_regex(step, output) for output in outputs]
            parsed = parsed and all(output != step.get("fallback", FALLBACK) for output in outputs)
        elif function == "take_first":
            outputs = outputs[:1]
        elif function == "lowercase":
            outputs = [output.lower() for output in outputs]
        elif function == "uppercase":
            outputs = [output.upper() for output in outputs]
        elif function == "remove_whitespace":  # the harness strips leading whitespace only
            outputs = [output.lstrip() for output in outputs]
        elif function == "strip":
            outputs = [output.strip() for output in outputs]
    return outputs, parsed


def _regex(step: dict[str, Any], output: str) -> str:
    pattern = re.compile(step.get("regex_pattern", r"#### (\-?[0-9\.\,]+)"))
    matches = pattern.findall(output)
    if not matches:
        return step.get("fallback", FALLBACK)
    match = matches[step.get("group_select", 0)] if -len(matches) <= step.get("group_select", 0) < len(matches) \
        else matches[-1]
    if isinstance(match, tuple):  # several groups: the first one that matched
        match = next((group for group in match if group), step.get("fallback", FALLBACK))
    return match.strip()
