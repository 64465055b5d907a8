"""The ids and paths a run has read, and id arguments that may only be among them."""

from __future__ import annotations

import re
from typing import Any

from agentd.agents.files import FILE_TYPES
from agentd.agents.grounding.numbers import number_unread
from agentd.agents.grounding.schemas import MOST_OFFERED, unfilled_groups
from tools.schema import ID_KINDS, PATH_OR_ID

# An id as the stores make them: a lower-case prefix, a dash, hex digits (`file-3f…`, `ftjob-…`, `dep-…`).
_ID = re.compile(r"(?<![\w-])(([a-z]+)-[0-9a-f]{8,})(?![\w-])")
# A file's path as people write one: a name with an extension (`tickets.jsonl`), maybe in folders. Not
# a number (`0.5`), a model name (`HuggingFaceTB/SmolLM2`), "e.g." or a sentence's end ("on sciq.").
_PATH = re.compile(r"(?<![\w./:~-])((?:~/|\.{0,2}/)?(?:[\w.-]+/)*[\w-]+(?:\.[\w-]+)*\.[A-Za-z][A-Za-z0-9]{1,6})(?![\w/-])")
# How an argument's description names the id it takes: "a file id (file-...) or the path of a JSONL file".
_ID_FORMAT = re.compile(r"\(([a-z]+)-\.\.\.\)")
# What else such an argument may hold (a path, a model name): printable ASCII a JSON string need not escape.
_PLAIN = [chr(c) for c in range(32, 127) if chr(c) not in '"\\']


class RunIds:
    """The ids a run has read (uploads, jobs, deployments) and the file paths, latest last."""

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}
        self._paths: dict[str, None] = {}

    def learn_from_text(self, text: str) -> None:
        for found, pattern in ((self._seen, _ID), (self._paths, _PATH)):
            for match in pattern.finditer(text):
                found.pop(match[1], None)
                found[match[1]] = None

    def kinds(self) -> set[str]:
        """The prefixes of the ids read: `file`, `ftjob`, …"""
        return {i.split("-", 1)[0] for i in self._seen}

    def with_prefix(self, *prefixes: str) -> list[str]:
        """The ids `prefix-…` read (of any of `prefixes`), latest first."""
        return [i for i in reversed(self._seen) if i.split("-", 1)[0] in prefixes][:MOST_OFFERED]

    def paths(self) -> list[str]:
        """The file paths read (`examples/support_tickets.jsonl`), latest first."""
        return list(reversed(self._paths))[:MOST_OFFERED]


def unfillable(parameters: dict[str, Any]) -> list[str]:
    """What a call of a tool with these (grounded) parameters could not fill yet, though it must: a
    required argument that can only be an id with none to take (the run has read no id of its kind, so a
    call could only name one that does not exist), or a number that is never a guess with none read for
    it; a group of which a call gives one at least with nothing left to write ("width or height").

    The embedded model, lost, called `job_status` with ids it never read ("none", a model name, a
    file id) until its step limit, instead of `list_jobs` or an answer, and `detect_edges` on a
    model's name; asked to look at a picture's height and resize it to half that, a plan resized it
    first, with no size at all; asked to find the face and crop it out, it cropped at a made-up box."""
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return []
    return [name for name in parameters.get("required") or ()
            if id_unread(properties.get(name)) or number_unread(properties.get(name))] + unfilled_groups(parameters)


def id_unread(schema: Any) -> bool:
    """Whether a (grounded) argument schema can only be an id and the run has read none of its kind: a
    job id, or a picture or document (agents.files makes one an `enum` of the files the run knows; the
    data: URL a tool would also take is not something a model writes, and an agent may not pass a path:
    asked "are any fine-tunes still running?", a plan added the document "none" to the knowledge base)."""
    return (isinstance(schema, dict) and "enum" not in schema
            and (ID_KINDS in schema or PATH_OR_ID in schema or schema.get("x-agentd-type") in FILE_TYPES))


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
    if PATH_OR_ID in schema:
        seen = ids.with_prefix(*schema[PATH_OR_ID]) + ids.paths()
        return {**schema, "enum": seen} if seen else schema
    named = _ID_FORMAT.search(schema.get("description", ""))
    if not named:
        return schema
    seen = ids.with_prefix(named[1])
    # Any other value (a path, a model name) may not be an id either: not a made-up one of this kind,
    # nor one of another kind the run read (`undeploy` given a picture's file id).
    kinds = sorted({named[1], *ids.kinds()} if seen else ids.kinds() - {named[1]})
    if not kinds:
        return schema
    # Nor its look-alike with an underscore: refused `file-…`, undeploy was given `file_…` twice.
    other = {**schema, "pattern": not_starting_with(*(f"{kind}{dash}" for kind in kinds for dash in "-_"))}
    if not seen:
        return other
    return {"description": schema["description"], "anyOf": [
        {"type": "string", "enum": seen}, {key: value for key, value in other.items() if key != "description"}]}


def not_starting_with(*prefixes: str) -> str:
    """A regular expression for the plain strings that start with none of `prefixes`, written without
    look-ahead or negated classes (the grammar compilers take neither): a walk down the prefixes'
    trie that leaves it by any other character, or ends before a prefix is complete."""
    def one_of(chars: list[str]) -> str:
        return "[" + "".join(f"\\{c}" if c in "\\]-[^." else c for c in chars) + "]"

    def literal(text: str) -> str:
        return re.sub(r"([.\-\\^$|?*+()\[\]{}])", r"\\\1", text)

    trie: dict[str, Any] = {}
    for prefix in prefixes:
        node = trie
        for char in prefix:
            node = node.setdefault(char, {})
        node[""] = {}  # a whole prefix: no string may go through it

    def after(node: dict[str, Any]) -> str:
        branches = [one_of([c for c in _PLAIN if c not in node]) + one_of(_PLAIN) + "*"]
        branches += [literal(char) + f"({after(child)})?" for char, child in node.items() if char and "" not in child]
        return "|".join(branches)

    return f"^({after(trie)})$"
