"""The words a run has read, and named choices and names that may only be among them or said so."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from agentd.agents.grounding.ids import RunIds
from agentd.agents.grounding.numbers import NUMBER_WORDS, SCALES
from agentd.agents.grounding.schemas import declared_on, each_branch, each_property, optional_narrowed
from tools.schema import NAMES, OR_PATH, SAID_AS, SAID_SURELY


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
        number = r"\d+(?:\.\d+)?|" + "|".join(NUMBER_WORDS)
        said = re.finditer(rf"\b({number})(?: (?:or|to|and) ({number}))? ({unit})\b", self._text)
        return [(float(NUMBER_WORDS.get(n, n)), declared[m[3]]) for m in said for n in m.groups()[:2] if n]

    def sizes(self) -> list[tuple[float, float]]:
        """The sizes read as width by height: "256 by 256", "1024x768", "640 × 480"."""
        said = re.finditer(r"\b(\d+) ?(?:x|by|×) ?(\d+)\b", self._text)
        return [(float(match[1]), float(match[2])) for match in said]

    def scaled(self, name: str) -> list[Fraction]:
        """The shares or multiples said of a thing called `name`: "half that height", "double the width",
        "a third of its height"."""
        scale = "|".join(SCALES)
        said = re.finditer(rf"\b({scale})[sd]? (?:of )?(?:that |the |its |this )?{re.escape(_as_words(name))}\b",
                           self._text)
        return [SCALES[match[1]] for match in said]

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

        return each_branch(prop, said)

    return optional_narrowed(parameters, said_choices)


def _said_words(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, list[str]]:
    """Per value, the words that say it: the tool's `said_as` and `surely` words, declared on the
    property or on its branch of a `| None`."""
    said: dict[str, list[str]] = {}
    for words in (declared_on(SAID_AS, schema, prop), declared_on(SAID_SURELY, schema, prop)):
        for value, phrases in words.items():
            said[value] = said.get(value, []) + list(phrases)
    return said


def with_grounded_names(parameters: dict[str, Any], ids: RunIds, words: RunWords) -> dict[str, Any]:
    """A copy of a tool's parameters where a string that is one of a set of names (tools.schema.one_of_names:
    a benchmark task) may be a name the run read, or any of them when it read none and the argument is
    required; one that may also be a path may be a path the run read. An optional one the run named
    nothing for cannot be written, not even as a path (the tool's default holds): the only path read is
    mostly the training file, and tune_and_evaluate scoring on its own training data is no comparison.

    The embedded model evaluated on tasks nobody named, and not even tasks: `tune-then-check` (the
    request's own words for the workflow), `job_status`, `training`."""
    return each_property(parameters, lambda schema, required, _: _named(schema, ids, words, required))


def _named(schema: Any, ids: RunIds, words: RunWords, required: bool) -> Any:
    """`schema` with its names narrowed (in a `| None`'s branches and a list's items); None: nothing left."""
    if not isinstance(schema, dict):
        return schema
    if any(union in schema for union in ("anyOf", "oneOf")):
        return each_branch(schema, lambda branch: _named(branch, ids, words, required))
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
