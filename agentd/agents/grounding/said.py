"""What the person said, written: values, counts and lists of names their own turns asked for, which
the model must write rather than leave out."""

from __future__ import annotations

import json
from typing import Any

from agentd.agents.grounding.schemas import declared_on, each_branch, each_property, optional_narrowed, within
from agentd.agents.grounding.words import RunWords
from tools.schema import COUNTED, NAMES, SAID_AS, SAID_SURELY

def with_said_values(parameters: dict[str, Any], asked: RunWords) -> dict[str, Any]:
    """A copy of a tool's parameters where an optional choice whose value the person asked for in words
    that can only mean it (tools.schema.said_as's `surely`: "don't wait", "a black and white copy"),
    without naming its default, is required and that value only.

    Free to leave an optional argument out, the embedded model dropped what it was told: `method: full`
    for "start a full fine-tune", `include_stopped` for "including the ones that were already stopped"."""
    written: list[str] = []

    def write(prop: dict[str, Any], name: str) -> dict[str, Any]:
        if "default" not in prop:
            return prop
        value = _surely_said(prop, asked)
        if value is None:
            value = _counted(prop, asked)
        if value is None:
            return prop
        written.append(name)
        described = {"description": prop["description"]} if "description" in prop else {}
        kind = {bool: "boolean", str: "string", int: "integer", float: "number"}[type(value)]
        return {"type": kind, "enum": [value], **described}

    narrowed = optional_narrowed(parameters, write)
    return {**narrowed, "required": [*(parameters.get("required") or ()), *written]} if written else parameters


def _counted(prop: dict[str, Any], asked: RunWords) -> int | float | str | None:
    """The one number the request said in the argument's units ("a single epoch"), if the run may write it;
    for a string, as it is written in the unit said ("10 minutes" as "10m")."""
    for branch in (b for b in prop.get("anyOf", [prop]) if isinstance(b, dict)):
        units = declared_on(COUNTED, branch, prop)
        if not units or branch.get("type") not in ("integer", "number", "string"):
            continue
        said = {(number, units[unit]) for number, unit in asked.counted(*units)}
        if branch["type"] == "string":
            written = {form.format(int(n) if n.is_integer() else n) for n, form in said}
            if len(written) == 1:
                return written.pop()
            continue
        numbers = {number for number, _ in said}
        if len(numbers) != 1:
            continue
        value = numbers.pop()
        if branch["type"] == "integer" and not value.is_integer():
            continue
        value = int(value) if value.is_integer() else value
        # Among the numbers grounded for it (with_grounded_numbers), else within its bounds.
        if value in branch["enum"] if "enum" in branch else within(value, branch):
            return value
    return None


def _surely_said(prop: dict[str, Any], asked: RunWords) -> bool | str | None:
    """The one value other than the default that the request surely said, or None."""
    branches = [b for b in prop.get("anyOf", [prop]) if isinstance(b, dict) and b.get("type") != "null"]
    for branch in branches:
        surely = declared_on(SAID_SURELY, branch, prop)
        if not surely:
            continue
        # A yes or no's default is named only in its words; a choice's also by its name.
        default = json.dumps(prop["default"]) if isinstance(prop["default"], bool) else str(prop["default"])
        if asked.said(*surely.get(default, ()), *([] if isinstance(prop["default"], bool) else [default])):
            continue
        said = [value for value, phrases in surely.items() if value != default and asked.said(*phrases)]
        if len(said) == 1:
            return said[0] == "true" if branch.get("type") == "boolean" else said[0]
    return None


def with_said_names(parameters: dict[str, Any], asked: RunWords) -> dict[str, Any]:
    """A copy of a tool's parameters where a list of names (benchmark tasks) is the names the person
    listed together, in the order said, when they listed more than one (one is left to with_grounded_names).

    Offered both, the embedded model evaluated "the hellaswag and winogrande benchmarks" on hellaswag
    alone."""
    return each_property(parameters, lambda schema, required, _: _all_said(schema, asked))


def _all_said(schema: Any, asked: RunWords) -> Any:
    if not isinstance(schema, dict):
        return schema
    if any(union in schema for union in ("anyOf", "oneOf")):
        return each_branch(schema, lambda branch: _all_said(branch, asked))
    items = schema.get("items")
    if schema.get("type") != "array" or not isinstance(items, dict) or NAMES not in items:
        return schema
    said_as = items.get(SAID_AS) or {}
    names = {n: tuple(said_as.get(n, ())) for n in items[NAMES]}
    listed = asked.listed(names)
    # A name said apart from the list is another call's ("run hellaswag and piqa on A, then compare B on
    # boolq"): which list goes where is left to the model.
    if len(listed) < 2 or any(asked.said(n, *words) for n, words in names.items() if n not in listed):
        return schema
    return {**schema, "prefixItems": [{"type": "string", "enum": [name]} for name in listed],
            "minItems": len(listed), "maxItems": len(listed)}
