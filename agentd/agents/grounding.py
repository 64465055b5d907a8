"""Numbers and ids an agent run has seen, and tool schemas whose optional numbers and whose ids may
only be one of them.

A small model fills in optional numeric arguments nobody gave it: measured on the openvino engine,
the plain-words request ("fine-tune smollm2 on my tickets, evaluate both, tell me which is better")
called tune_and_evaluate with `max_steps: 100000` and `limit: 100000`, twelve hours of training
nobody asked for. An optional number is a choice the tool makes well by itself (its default, or
"auto") unless the person said one, so the grammar lets a run pass only numbers that appear in
what it has read: the conversation and the tools' observations. Required numbers, and every
other argument, are left as they are. An id (an upload, a job) is copied the same way: from what
the run has read, whole (see with_grounded_ids); a tool whose argument can only be an id the run
has not read cannot be called yet (see unfillable).
"""

from __future__ import annotations

import re
from typing import Any

from tools.schema import ID_KINDS

# A number standing on its own: not part of an id (`ftjob-4a3a…`, `file-…`) or a word (`gpt4`).
_NUMBER = re.compile(r"(?<![\w.:/-])\d+(?:\.\d+)?(?![\w:/-]|\.\d)")
_MOST = 64  # numbers offered per argument: the latest ones the run read


class RunNumbers:
    """The numbers a run has read, latest last."""

    def __init__(self) -> None:
        self._seen: dict[float, None] = {}

    def learn_from_text(self, text: str) -> None:
        for match in _NUMBER.finditer(text.replace(",", "")):
            value = float(match[0])
            self._seen.pop(value, None)
            self._seen[value] = None

    def choices(self, schema: dict[str, Any]) -> list[int | float]:
        """The seen numbers that `schema` (an integer or number schema) accepts, latest first."""
        integer = schema.get("type") == "integer"
        chosen: list[int | float] = []
        for value in reversed(self._seen):
            if integer and not value.is_integer():
                continue
            if not _within(value, schema):
                continue
            chosen.append(int(value) if integer else value)
            if len(chosen) == _MOST:
                break
        return chosen


def with_grounded_numbers(parameters: dict[str, Any], numbers: RunNumbers) -> dict[str, Any]:
    """A copy of a tool's parameters where each optional numeric argument is an `enum` of the numbers
    the run has seen that fit it; one with none to offer can no longer be written (its default holds).
    A choice such as `"auto" | number` keeps its other branches."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return parameters
    required = set(parameters.get("required") or ())
    grounded: dict[str, Any] = {}
    for name, schema in properties.items():
        narrowed = schema if name in required else _grounded(schema, numbers)
        if narrowed is not None:
            grounded[name] = narrowed
    return {**parameters, "properties": grounded}


def _grounded(schema: Any, numbers: RunNumbers) -> Any:
    """The schema with its numbers limited to the seen ones; None when nothing it allows is left."""
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") in ("integer", "number") and "enum" not in schema and "const" not in schema:
        choices = numbers.choices(schema)
        if not choices:
            return None
        return {key: value for key, value in schema.items()
                if key not in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")} | {"enum": choices}
    for union in ("anyOf", "oneOf"):
        if union in schema:
            branches = [branch for branch in (_grounded(b, numbers) for b in schema[union]) if branch is not None]
            if not [b for b in branches if b.get("type") != "null"]:
                return None  # only "null" is left: the argument says nothing, so it is not written
            return {**schema, union: branches}
    return schema


def _within(value: float, schema: dict[str, Any]) -> bool:
    return (("minimum" not in schema or value >= schema["minimum"])
            and ("maximum" not in schema or value <= schema["maximum"])
            and ("exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"])
            and ("exclusiveMaximum" not in schema or value < schema["exclusiveMaximum"]))


# An id as the stores make them: a lower-case prefix, a dash, hex digits (`file-3f…`, `ftjob-…`, `dep-…`).
_ID = re.compile(r"(?<![\w-])([a-z]+)-[0-9a-f]{8,}(?![\w-])")
# How an argument's description names the id it takes: "a file id (file-...) or the path of a JSONL file".
_ID_FORMAT = re.compile(r"\(([a-z]+)-\.\.\.\)")
# What else such an argument may hold (a path, a model name): printable ASCII a JSON string need not escape.
_PLAIN = [chr(c) for c in range(32, 127) if chr(c) not in '"\\']


class RunIds:
    """The ids a run has read (uploads, jobs, deployments), latest last."""

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}

    def learn_from_text(self, text: str) -> None:
        for match in _ID.finditer(text):
            self._seen.pop(match[0], None)
            self._seen[match[0]] = None

    def with_prefix(self, *prefixes: str) -> list[str]:
        """The ids `prefix-…` read (of any of `prefixes`), latest first."""
        return [i for i in reversed(self._seen) if i.split("-", 1)[0] in prefixes][:_MOST]


def unfillable(parameters: dict[str, Any]) -> list[str]:
    """The required arguments of (grounded) parameters that can only be an id and have none to take:
    the run has read no id of their kind, so a call could only name one that does not exist.

    The embedded model, lost, called `job_status` with ids it never read ("none", a model name, a
    file id) until its step limit, instead of `list_jobs` or an answer, and `detect_edges` on a
    model's name."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return []
    return [name for name in parameters.get("required") or () if id_unread(properties.get(name))]


def id_unread(schema: Any) -> bool:
    """Whether a (grounded) argument schema can only be an id and the run has read none of its kind: a
    job id, or a picture (agents.files makes one an `enum` of the pictures the run knows; the data: URL
    a tool would also take is not something a model writes)."""
    return (isinstance(schema, dict) and "enum" not in schema
            and (ID_KINDS in schema or schema.get("x-agentd-type") == "image"))


def with_grounded_ids(parameters: dict[str, Any], ids: RunIds) -> dict[str, Any]:
    """A copy of a tool's parameters where a string whose description names an id format (`(file-...)`)
    may be an id of that kind only if the run has read it; any other value (a path) stays allowed.
    A string that is only ever an id (`x-agentd-id`: its kinds, as tools.schema.id_of declares it)
    may only be one of the ids of those kinds the run has read.

    A small model copying a 24-digit upload id stopped after 18 (`file-05e7a388748001fe8f`) and the
    fine-tune failed; with the id an `enum` choice it can only be written whole. Nothing changes
    while the run has read no id of that kind."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return parameters
    return {**parameters, "properties": {name: _id_choices(schema, ids) for name, schema in properties.items()}}


def _id_choices(schema: Any, ids: RunIds) -> Any:
    if not isinstance(schema, dict) or schema.get("type") != "string" or "enum" in schema or "const" in schema:
        return schema
    if ID_KINDS in schema:
        seen = ids.with_prefix(*schema[ID_KINDS])
        return {**schema, "enum": seen} if seen else schema
    named = _ID_FORMAT.search(schema.get("description", ""))
    seen = ids.with_prefix(named[1]) if named else []
    if not seen:
        return schema
    other = {key: value for key, value in schema.items() if key != "description"}
    return {"description": schema["description"], "anyOf": [
        {"type": "string", "enum": seen}, {**other, "pattern": not_starting_with(f"{named[1]}-")}]}


def not_starting_with(prefix: str) -> str:
    """A regular expression for the plain strings that do not start with `prefix`, written without
    look-ahead or negated classes (the grammar compilers take neither)."""
    def one_of(chars: list[str]) -> str:
        return "[" + "".join(f"\\{c}" if c in "\\]-[^." else c for c in chars) + "]"

    def literal(text: str) -> str:
        return re.sub(r"([.\-\\^$|?*+()\[\]{}])", r"\\\1", text)

    anything = one_of(_PLAIN) + "*"
    branches = []
    for i, char in enumerate(prefix):
        branches.append(literal(prefix[:i]) + one_of([c for c in _PLAIN if c != char]) + anything)
        if i:
            branches.append(literal(prefix[:i]))
    return f"^({'|'.join(branches)})$"
