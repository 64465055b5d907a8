"""Numbers, ids, paths and words an agent run has seen, and tool schemas whose optional numbers, ids,
files, optional named choices and names may only be among them.

A small model fills in optional numeric arguments nobody gave it: measured on the openvino engine,
the plain-words request ("fine-tune smollm2 on my tickets, evaluate both, tell me which is better")
called tune_and_evaluate with `max_steps: 100000` and `limit: 100000`, twelve hours of training
nobody asked for. An optional number is a choice the tool makes well by itself (its default, or
"auto") unless the person said one, so the grammar lets a run pass only numbers that appear in
what it has read: the conversation and the tools' observations. Required numbers, and every
other argument, are left as they are by this rule. An id (an upload, a job) is copied the same way: from what
the run has read, whole (see with_grounded_ids); a tool whose argument can only be an id the run
has not read cannot be called yet (see unfillable). An optional choice among named values (a
fine-tune's method) is the tool's default unless the conversation said another (see
with_grounded_choices); a file argument is a path or upload the run read, and a name from a known set
(a benchmark task) one the conversation said (see with_grounded_names). RunReading holds all a run read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from agentd.agents.files import FILE_TYPES, RunFiles, with_file_choices
from tools.schema import COUNTED, ID_KINDS, NAMES, OR_PATH, PATH_OR_ID, SAID_AS, SAID_SURELY

# A number standing on its own: not part of an id (`ftjob-4a3a…`, `file-…`), a date or a word (`gpt4`);
# "3-shot" is a 3, and so is "3:" or "3." ending a phrase.
_NUMBER = re.compile(r"(?<![\w.:/-])\d+(?:\.\d+)?(?![\w]|[:/]\w|\.\d|-\d)")
# Sizes written as one word: "1024x768", "640px".
_SIZE = re.compile(r"(\d)(x(?=\d)|px\b)")
# Numbers said in words ("for three epochs", "a single pass").
_WORDS = {word: index for index, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())} | {"single": 1}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
_MOST = 64  # numbers offered per argument: the latest ones the run read


# Words for a share or a multiple of a number the run read ("resize it to half that height"): the
# numbers they make are grounded too. An ordinal "third" offers a few more choices, nothing worse.
_SCALES = {"half": Fraction(1, 2), "halve": Fraction(1, 2), "third": Fraction(1, 3), "quarter": Fraction(1, 4),
           "double": Fraction(2), "twice": Fraction(2), "triple": Fraction(3)}
_SCALE = re.compile(r"\b(" + "|".join(_SCALES) + r")[sd]?\b", re.IGNORECASE)


class RunNumbers:
    """The numbers a run has read, latest last, and the shares of them its words named. A number in a
    JSON result is the value of its field: it is offered to an argument of the same name only (an
    image's `height` to a `height`; a face box's `x`, `width` … to a crop's), not to every argument:
    with an image's statistics read, 60 numbers of histograms and channel means stood beside its
    height, and "resize it to half that height" was written as the red channel's maximum, 250."""

    def __init__(self) -> None:
        self._seen: dict[float, None] = {}
        self._fields: dict[str, dict[float, None]] = {}
        self._scales: dict[Fraction, None] = {}

    def learn_from_text(self, text: str) -> None:
        result = _leading_json(text)
        if result is None:
            self._learn_words(text)
            return
        value, rest = result
        self._learn_value(value, None)
        self._learn_words(rest)

    def _learn_words(self, text: str) -> None:
        text = _SIZE.sub(r"\1 \2 ", text.replace(",", ""))
        found = [(m.start(), float(m[0])) for m in _NUMBER.finditer(text)]
        found += [(m.start(), float(_WORDS[m[1].lower()])) for m in _NUMBER_WORD.finditer(text)]
        for _, value in sorted(found, key=lambda place: place[0]):
            _add_latest(self._seen, value)
        for match in _SCALE.finditer(text):
            self._scales[_SCALES[match[1].lower()]] = None

    def _learn_value(self, value: Any, field: str | None) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int | float):
            _add_latest(self._seen if field is None else self._fields.setdefault(field, {}), float(value))
        elif isinstance(value, str):
            self._learn_words(value)  # prose in a result ("25 days of holiday") is read as prose
        elif isinstance(value, list):
            for item in value:
                self._learn_value(item, field)
        elif isinstance(value, dict):
            for key, item in value.items():
                self._learn_value(item, str(key).lower())

    def choices(self, schema: dict[str, Any], name: str | None = None) -> list[int | float]:
        """The numbers `schema` (an integer or number schema, of the argument `name`) accepts that the
        run read, each followed by the shares of it the run's words named: those of results' fields of
        that name first, then those read anywhere else, latest first."""
        integer = schema.get("type") == "integer"
        fields = self._fields.get(name.lower(), {}) if name else {}
        chosen: dict[int | float, None] = {}
        for value in [*reversed(fields), *reversed(self._seen)]:
            for candidate in (value, *self._scaled(value, integer)):
                if (integer and not candidate.is_integer()) or not _within(candidate, schema):
                    continue
                chosen[int(candidate) if integer else candidate] = None
                if len(chosen) == _MOST:
                    return list(chosen)
        return list(chosen)

    def _scaled(self, value: float, integer: bool) -> list[float]:
        scaled = []
        for scale in self._scales:
            exact = value * scale.numerator / scale.denominator
            # Half of 375 pixels is 187 or 188: both are what a person who said "half" meant.
            scaled += [float(math.floor(exact)), float(math.ceil(exact))] if integer else [exact]
        return scaled


def with_grounded_numbers(parameters: dict[str, Any], numbers: RunNumbers) -> dict[str, Any]:
    """A copy of a tool's parameters where each optional numeric argument is an `enum` of the numbers
    the run has seen that fit it; one with none to offer can no longer be written (its default holds).
    A choice such as `"auto" | number` keeps its other branches."""
    def grounded(name: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        def narrow(schema: dict[str, Any]) -> dict[str, Any] | None:
            if schema.get("type") not in ("integer", "number") or "enum" in schema or "const" in schema:
                return schema
            choices = numbers.choices(schema, name)
            if not choices:
                return None
            bounds = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
            return {key: value for key, value in schema.items() if key not in bounds} | {"enum": choices}

        return narrow

    return _optional_narrowed(parameters, lambda schema, name: _each_branch(schema, grounded(name)))


class RunWords:
    """What a run has read, as lower-case words: `full-parameter` and `validating_files` read as
    `full parameter` and `validating files`."""

    def __init__(self) -> None:
        self._text = " "

    def learn_from_text(self, text: str) -> None:
        self._text += _as_words(text) + " "

    def said(self, *phrases: str) -> bool:
        return any(self._found(phrase) for phrase in phrases)

    def listed(self, names: dict[str, tuple[str, ...]]) -> list[str]:
        """The longest list of these names (each said as itself or in its words) read as one: "hellaswag and
        winogrande", "piqa, boolq and sciq"; names said apart ("piqa, then compare them on boolq") are not."""
        said = sorted((match.start(), match.end(), name) for name, phrases in names.items()
                      for phrase in (name, *phrases) for match in self._found(phrase))
        longest: list[str] = []
        run: list[str] = []
        end = -1
        for start, stop, name in said:
            if name in run:
                continue
            joined = end >= 0 and re.fullmatch(r"\s*(,|and|&|, and)\s*(the\s+)?", self._text[end:start]) is not None
            run = [*run, name] if joined else [name]
            end = stop
            longest = max(longest, run, key=len)
        return longest

    def counted(self, *units: str) -> list[tuple[float, str]]:
        """The numbers read right before one of `units`, each with its unit as declared ("20 questions", "a
        single epoch", "5-shot"; both of "2 or 3 epochs")."""
        declared = {_as_words(unit): unit for unit in units}
        unit = "|".join(re.escape(u) for u in sorted(declared, key=len, reverse=True))
        number = r"\d+(?:\.\d+)?|" + "|".join(_WORDS)
        said = re.finditer(rf"\b({number})(?: (?:or|to|and) ({number}))? ({unit})\b", self._text)
        return [(float(_WORDS.get(n, n)), declared[m[3]]) for m in said for n in m.groups()[:2] if n]

    def _found(self, phrase: str) -> list[re.Match[str]]:
        return list(re.finditer(rf"\b{re.escape(_as_words(phrase))}\b", self._text))


def _as_words(text: str) -> str:
    return re.sub(r"[\s_-]+", " ", text.lower()).strip()


def with_grounded_choices(parameters: dict[str, Any], words: RunWords) -> dict[str, Any]:
    """A copy of a tool's parameters where an optional choice among named values (`method`: lora,
    qlora or full) may be its default, or a value the run read by name or as the tool says people
    say it (tools.schema.said_as); the others cannot be written. An optional yes-or-no the tool says
    the words for (`wait`: false as "in the background") is the same.

    Unasked, the embedded model wrote `method: "full"` (every weight, not an adapter) for "adapt the
    base model to it, capped at 50 training steps" and "run a single epoch of training"."""
    def said_choices(prop: dict[str, Any], _: str) -> dict[str, Any] | None:
        def said(schema: dict[str, Any]) -> dict[str, Any] | None:
            said_as = _said_words(schema, prop)
            if schema.get("type") == "boolean" and said_as and isinstance(prop.get("default"), bool):
                # Its other value only when said: a yes or no has no name a person says, so a tool
                # declares the words (`said_as(false=["background"])`); without them it is left alone.
                other = "false" if prop["default"] else "true"
                return schema if words.said(*said_as.get(other, ())) else None
            values = schema.get("enum")
            if not (isinstance(values, list) and values and all(isinstance(v, str) for v in values)):
                return schema
            kept = [v for v in values if v == prop.get("default") or words.said(v, *said_as.get(v, ()))]
            return {**schema, "enum": kept} if kept else None

        return _each_branch(prop, said)

    return _optional_narrowed(parameters, said_choices)


def _said_words(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, list[str]]:
    """Per value, the words that say it: the tool's `said_as` and `surely` words, declared on the
    property or on its branch of a `| None`."""
    said: dict[str, list[str]] = {}
    for declared in (_declared(SAID_AS, schema, prop), _declared(SAID_SURELY, schema, prop)):
        for value, phrases in declared.items():
            said[value] = said.get(value, []) + list(phrases)
    return said


def _declared(key: str, branch: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """What a tool declared under `key` (tools.schema) for an argument: on its branch of a `| None`, or on it."""
    return branch.get(key) or prop.get(key) or {}


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

    narrowed = _optional_narrowed(parameters, write)
    return {**narrowed, "required": [*(parameters.get("required") or ()), *written]} if written else parameters


def _counted(prop: dict[str, Any], asked: RunWords) -> int | float | str | None:
    """The one number the request said in the argument's units ("a single epoch"), if the run may write it;
    for a string, as it is written in the unit said ("10 minutes" as "10m")."""
    for branch in (b for b in prop.get("anyOf", [prop]) if isinstance(b, dict)):
        units = _declared(COUNTED, branch, prop)
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
        if value in branch["enum"] if "enum" in branch else _within(value, branch):
            return value
    return None


def _surely_said(prop: dict[str, Any], asked: RunWords) -> bool | str | None:
    """The one value other than the default that the request surely said, or None."""
    branches = [b for b in prop.get("anyOf", [prop]) if isinstance(b, dict) and b.get("type") != "null"]
    for branch in branches:
        surely = _declared(SAID_SURELY, branch, prop)
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
    return _each_property(parameters, lambda schema, required, _: _all_said(schema, asked))


def _all_said(schema: Any, asked: RunWords) -> Any:
    if not isinstance(schema, dict):
        return schema
    if any(union in schema for union in ("anyOf", "oneOf")):
        return _each_branch(schema, lambda branch: _all_said(branch, asked))
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


def with_grounded_names(parameters: dict[str, Any], ids: RunIds, words: RunWords) -> dict[str, Any]:
    """A copy of a tool's parameters where a string that is one of a set of names (tools.schema.one_of_names:
    a benchmark task) may be a name the run read, or any of them when it read none and the argument is
    required; one that may also be a path may be a path the run read. An optional one the run named
    nothing for cannot be written, not even as a path (the tool's default holds): the only path read is
    mostly the training file, and tune_and_evaluate scoring on its own training data is no comparison.

    The embedded model evaluated on tasks nobody named, and not even tasks: `tune-then-check` (the
    request's own words for the workflow), `job_status`, `training`."""
    return _each_property(parameters, lambda schema, required, _: _named(schema, ids, words, required))


def _named(schema: Any, ids: RunIds, words: RunWords, required: bool) -> Any:
    """`schema` with its names narrowed (in a `| None`'s branches and a list's items); None: nothing left."""
    if not isinstance(schema, dict):
        return schema
    if any(union in schema for union in ("anyOf", "oneOf")):
        return _each_branch(schema, lambda branch: _named(branch, ids, words, required))
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        items = _named(schema["items"], ids, words, required)
        if items is None or "enum" not in items or items is schema["items"]:
            return None if items is None else {**schema, "items": items}
        # No name twice: offered "piqa" alone for "score smollm2 on piqa, only the first 20 questions",
        # the model wrote it twenty times.
        most = min(len(items["enum"]), schema.get("maxItems", len(items["enum"])))
        return {**schema, "items": items, "maxItems": most}
    if NAMES not in schema or schema.get("type") != "string":
        return schema
    said_as = schema.get(SAID_AS) or {}
    names = [n for n in schema[NAMES] if words.said(n, *said_as.get(n, ()))]
    if not (names or required):
        return None
    return {**schema, "enum": (names or schema[NAMES]) + (ids.paths() if schema.get(OR_PATH) else [])}


def _optional_narrowed(parameters: dict[str, Any], narrow: Callable[[dict[str, Any], str], dict[str, Any] | None]
                       ) -> dict[str, Any]:
    """A copy of tool parameters with each optional argument narrowed (`narrow(schema, name)`); one
    narrowed to None is left out."""
    return _each_property(parameters, lambda schema, required, name: (
        schema if required or not isinstance(schema, dict) else narrow(schema, name)))


def _each_property(parameters: dict[str, Any], narrow: Callable[[Any, bool, str], Any]) -> dict[str, Any]:
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


def _each_branch(schema: dict[str, Any], narrow: Callable[[dict[str, Any]], dict[str, Any] | None]
                 ) -> dict[str, Any] | None:
    """`narrow` applied to a schema, or to each branch of its `anyOf`; None when nothing but null is left:
    the argument would say nothing, so it is not written."""
    for union in ("anyOf", "oneOf"):
        if union in schema:
            branches = [b for b in (_each_branch(b, narrow) if isinstance(b, dict) else b for b in schema[union])
                        if b is not None]
            if all(isinstance(b, dict) and b.get("type") == "null" for b in branches):
                return None
            return {**schema, union: branches}
    return narrow(schema)


def _leading_json(text: str) -> tuple[Any, str] | None:
    """A JSON object or list a text starts with (a tool's result), and the text after it (a picture's line)."""
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        value, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError:
        return None
    return value, stripped[end:]


def _add_latest(seen: dict[float, None], value: float) -> None:
    seen.pop(value, None)
    seen[value] = None


def _within(value: float, schema: dict[str, Any]) -> bool:
    return (("minimum" not in schema or value >= schema["minimum"])
            and ("maximum" not in schema or value <= schema["maximum"])
            and ("exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"])
            and ("exclusiveMaximum" not in schema or value < schema["exclusiveMaximum"]))


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
        return [i for i in reversed(self._seen) if i.split("-", 1)[0] in prefixes][:_MOST]

    def paths(self) -> list[str]:
        """The file paths read (`examples/support_tickets.jsonl`), latest first."""
        return list(reversed(self._paths))[:_MOST]


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
    other = {**schema, "pattern": not_starting_with(*(f"{kind}-" for kind in kinds))}
    if not seen:
        return other
    return {"description": schema["description"], "anyOf": [
        {"type": "string", "enum": seen}, {key: value for key, value in other.items() if key != "description"}]}


class RunReading:
    """Everything one agent run has read (the conversation, then the observations), and the tool
    definitions its grammar may have now.

    Args:
        files: the run's files; the runtime makes it first, to link the artifacts its tools make.
    """

    def __init__(self, files: RunFiles | None = None) -> None:
        self.files = files if files is not None else RunFiles()
        self.ids, self.numbers, self.words = RunIds(), RunNumbers(), RunWords()
        self.asked = RunWords()  # what the person said (their turns): what surely-said values come from

    def learn(self, text: str, stored_kind: Callable[[str], str | None], by_person: bool = False) -> None:
        """A chat turn (`by_person`: the user's): its file ids (`stored_kind` says what the file store holds
        under a bare one: "image", "file", or None), ids, numbers, paths and words."""
        self.files.learn_from_text(text)
        self.files.learn_bare_ids(text, stored_kind)
        self.read_result(text)
        if by_person:
            self.asked.learn_from_text(text)

    def read_result(self, text: str) -> None:
        """What a tool returned (its files come as artifacts)."""
        self.numbers.learn_from_text(text)
        self.ids.learn_from_text(text)
        self.words.learn_from_text(text)

    def definition(self, definition: dict[str, Any]) -> dict[str, Any]:
        """A tool definition as the run's grammar has it now: its file arguments limited to the files
        the run knows; its ids, paths, optional numbers, named choices and names to those it has read."""
        function = definition["function"]
        parameters = with_file_choices(function["parameters"], self.files)
        parameters = with_grounded_numbers(with_grounded_ids(parameters, self.ids), self.numbers)
        parameters = with_grounded_names(with_grounded_choices(parameters, self.words), self.ids, self.words)
        parameters = with_said_names(with_said_values(parameters, self.asked), self.asked)
        return {**definition, "function": {**function, "parameters": parameters}}


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
