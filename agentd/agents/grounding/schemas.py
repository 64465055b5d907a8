"""Walking a tool's parameters: each argument, each optional one, each branch of a `| None`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tools.schema import NEEDS_ONE_OF

# Values offered per argument (numbers, ids, paths): the latest ones the run read.
MOST_OFFERED = 64


def declared_on(key: str, branch: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """What a tool declared under `key` (tools.schema) for an argument: on its branch of a `| None`, or on it."""
    return branch.get(key) or prop.get(key) or {}


def optional_narrowed(parameters: dict[str, Any], narrow: Callable[[dict[str, Any], str], dict[str, Any] | None]
                      ) -> dict[str, Any]:
    """A copy of tool parameters with each optional argument narrowed (`narrow(schema, name)`); one
    narrowed to None is left out."""
    return each_property(parameters, lambda schema, required, name: (
        schema if required or not isinstance(schema, dict) else narrow(schema, name)))


def each_property(parameters: dict[str, Any], narrow: Callable[[Any, bool, str], Any]) -> dict[str, Any]:
    """A copy of tool parameters with `narrow(schema, required, name)` applied to each argument; one
    narrowed to None is left out."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return parameters
    required = set(parameters.get("required") or ())
    grounded: dict[str, Any] = {}
    for name, schema in properties.items():
        narrowed = narrow(schema, name in required, name)
        if narrowed is not None:
            grounded[name] = narrowed
    return {**parameters, "properties": grounded}


def each_branch(schema: dict[str, Any], narrow: Callable[[dict[str, Any]], dict[str, Any] | None]
                ) -> dict[str, Any] | None:
    """`narrow` applied to a schema, or to each branch of its `anyOf`; None when nothing but null is left:
    the argument would say nothing, so it is not written."""
    for union in ("anyOf", "oneOf"):
        if union in schema:
            branches = [b for b in (each_branch(b, narrow) if isinstance(b, dict) else b for b in schema[union])
                        if b is not None]
            if all(isinstance(b, dict) and b.get("type") == "null" for b in branches):
                return None
            return {**schema, union: branches}
    return narrow(schema)


def within(value: float, schema: dict[str, Any]) -> bool:
    """Whether a number keeps a number schema's bounds and steps (`multipleOf`: a picture's side, by 8)."""
    step = schema.get("multipleOf")
    return ((step is None or float(value / step).is_integer())
            and ("minimum" not in schema or value >= schema["minimum"])
            and ("maximum" not in schema or value <= schema["maximum"])
            and ("exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"])
            and ("exclusiveMaximum" not in schema or value < schema["exclusiveMaximum"]))


def unfilled_groups(parameters: dict[str, Any]) -> list[str]:
    """The groups of arguments a call gives one of at least (tools.tool's `needs_one_of`) of which the
    (grounded) parameters have none left to write: "width or height"."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return []
    return [" or ".join(group) for group in parameters.get(NEEDS_ONE_OF) or ()
            if not any(name in properties for name in group)]
