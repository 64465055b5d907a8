"""What the person said, written: values, counts and lists of names their own turns asked for, which
the model must write rather than leave out."""

from __future__ import annotations

import json
from typing import Any

from agentd.agents.grounding.numbers import RunNumbers, share_of
from agentd.agents.grounding.schemas import declared_on, each_branch, each_property, within
from agentd.agents.grounding.words import RunWords
from tools.schema import COUNTED, NAMES, SAID_AS, SAID_SURELY, SAID_UNLESS, SIDE

def with_said_values(parameters: dict[str, Any], asked: RunWords, numbers: RunNumbers | None = None) -> dict[str, Any]:
    """A copy of a tool's parameters where an argument whose value the person asked for is that value
    only, and an optional one is required: a value said in words that can only mean it
    (tools.schema.said_as's `surely`: "don't wait", "a black and white copy", "the top-left corner")
    without naming the default; a number said in the argument's units ("a single epoch", "50 pixels
    wide") or as one side of a size ("a 256 by 256 image"); a share of a result's field of the same
    name (`numbers`: what the run read; "half that height", with an image's height read).

    Free to leave an optional argument out, the embedded model dropped what it was told: `method: full`
    for "start a full fine-tune", `include_stopped` for "including the ones that were already stopped",
    the width and height of "a 256 by 256 image"; and it cropped "the top-left corner, 50 pixels wide
    and 40 high" at x 50, 100 high."""
    written: list[str] = []

    def write(prop: Any, required: bool, name: str) -> Any:
        if not isinstance(prop, dict) or not (required or "default" in prop):
            return prop
        values = _surely_said(prop, asked)
        if values is None:
            values = _numbers_said(prop, name, asked, numbers)
        if values is None:
            return prop
        if not required:
            written.append(name)
        described = {"description": prop["description"]} if "description" in prop else {}
        kind = {bool: "boolean", str: "string", int: "integer", float: "number"}[type(values[0])]
        return {"type": kind, "enum": values, **described}

    narrowed = each_property(parameters, write)
    return {**narrowed, "required": [*(parameters.get("required") or ()), *written]} if written else narrowed


def _numbers_said(prop: dict[str, Any], name: str, asked: RunWords, numbers: RunNumbers | None
                  ) -> list[int | float] | list[str] | None:
    """The number the request said for the argument, if it said one and the run may write it: in its
    units, as a side of a size or as a share of the field of its name (half of 375 pixels is 187 or 188:
    both are offered); for a string, as it is written in the unit said ("10 minutes" as "10m")."""
    for branch in (b for b in prop.get("anyOf", [prop]) if isinstance(b, dict)):
        units = declared_on(COUNTED, branch, prop)
        if branch.get("type") not in ("integer", "number", "string"):
            continue
        said = {(number, units[unit]) for number, unit in asked.counted(*units)} if units else set()
        if branch["type"] == "string":
            written = {form.format(int(n) if n.is_integer() else n) for n, form in said}
            if len(written) == 1:
                return [written.pop()]
            continue
        meant = {frozenset([number]) for number, _ in said}
        side = branch.get(SIDE) or prop.get(SIDE)
        meant |= {frozenset([size[side == "height"]]) for size in asked.sizes()} if side else set()
        latest = numbers.latest(name) if numbers is not None else None
        if latest is not None:
            meant |= {frozenset(share_of(latest, scale, branch["type"] == "integer")) for scale in asked.scaled(name)}
        if len(meant) != 1:
            continue
        values = sorted(v for v in meant.pop() if _writable(v, branch))
        if values:
            return [int(v) if branch["type"] == "integer" else v for v in values]
    return None


def _writable(value: float, branch: dict[str, Any]) -> bool:
    """Whether a number fits the (grounded) argument: among the numbers offered it, else within its bounds."""
    if branch["type"] == "integer" and not float(value).is_integer():
        return False
    return value in branch["enum"] if "enum" in branch else within(value, branch)


def _surely_said(prop: dict[str, Any], asked: RunWords) -> list[bool] | list[str] | list[int] | list[float] | None:
    """The one value other than the default (if it has one) that the request surely said, or None."""
    branches = [b for b in prop.get("anyOf", [prop]) if isinstance(b, dict) and b.get("type") != "null"]
    for branch in branches:
        surely = declared_on(SAID_SURELY, branch, prop)
        if not surely or asked.said(*(branch.get(SAID_UNLESS) or prop.get(SAID_UNLESS) or ())):
            continue
        if "default" in prop:
            # A yes or no's default is named only in its words; a choice's also by its name.
            default = json.dumps(prop["default"]) if isinstance(prop["default"], bool) else str(prop["default"])
            if asked.said(*surely.get(default, ()), *([] if isinstance(prop["default"], bool) else [default])):
                continue
        else:
            default = None
        said = [value for value, phrases in surely.items() if value != default and asked.said(*phrases)]
        if len(said) == 1:
            kind = branch.get("type")
            return [said[0] == "true" if kind == "boolean" else int(said[0]) if kind == "integer"
                    else float(said[0]) if kind == "number" else said[0]]
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
