"""The numbers a run has read, and optional numeric arguments that may only be among them."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from agentd.agents.grounding.schemas import MOST_OFFERED, each_branch, each_property, within
from tools.schema import SAID_OR_READ

# A number standing on its own: not part of an id (`ftjob-4a3a…`, `file-…`), a date or a word (`gpt4`);
# "3-shot" is a 3, and so is "3:" or "3." ending a phrase.
_NUMBER = re.compile(r"(?<![\w.:/-])\d+(?:\.\d+)?(?![\w]|[:/]\w|\.\d|-\d)")
# Sizes written as one word: "1024x768", "640px".
_SIZE = re.compile(r"(\d)(x(?=\d)|px\b)")
# Numbers said in words ("for three epochs", "a single pass").
NUMBER_WORDS = {word: index for index, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())} | {"single": 1}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


# Words for a share or a multiple of a number the run read ("resize it to half that height"): the
# numbers they make are grounded too. An ordinal "third" offers a few more choices, nothing worse.
SCALES = {"half": Fraction(1, 2), "halve": Fraction(1, 2), "third": Fraction(1, 3), "quarter": Fraction(1, 4),
           "double": Fraction(2), "twice": Fraction(2), "triple": Fraction(3)}
_SCALE = re.compile(r"\b(" + "|".join(SCALES) + r")[sd]?\b", re.IGNORECASE)


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
        result = leading_json(text)
        if result is None:
            self._learn_words(text)
            return
        value, rest = result
        self._learn_value(value, None)
        self._learn_words(rest)

    def _learn_words(self, text: str) -> None:
        text = _SIZE.sub(r"\1 \2 ", text.replace(",", ""))
        found = [(m.start(), float(m[0])) for m in _NUMBER.finditer(text)]
        found += [(m.start(), float(NUMBER_WORDS[m[1].lower()])) for m in _NUMBER_WORD.finditer(text)]
        for _, value in sorted(found, key=lambda place: place[0]):
            _add_latest(self._seen, value)
        for match in _SCALE.finditer(text):
            self._scales[SCALES[match[1].lower()]] = None

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

    def latest(self, field: str) -> float | None:
        """The value of the field `field` the run read last in a result (an image's `height`), if any."""
        values = self._fields.get(field.lower())
        return next(reversed(values)) if values else None

    def choices(self, schema: dict[str, Any], name: str | None = None) -> list[int | float]:
        """The numbers `schema` (an integer or number schema, of the argument `name`) accepts that the
        run read, each followed by the shares of it the run's words named: those of results' fields of
        that name first, then those read anywhere else, latest first."""
        integer = schema.get("type") == "integer"
        fields = self._fields.get(name.lower(), {}) if name else {}
        chosen: dict[int | float, None] = {}
        for value in [*reversed(fields), *reversed(self._seen)]:
            for candidate in (value, *self._scaled(value, integer)):
                if (integer and not candidate.is_integer()) or not within(candidate, schema):
                    continue
                chosen[int(candidate) if integer else candidate] = None
                if len(chosen) == MOST_OFFERED:
                    return list(chosen)
        return list(chosen)

    def _scaled(self, value: float, integer: bool) -> list[float]:
        scaled = []
        for scale in self._scales:
            scaled += share_of(value, scale, integer)
        return scaled


def share_of(value: float, scale: Fraction, integer: bool) -> list[float]:
    """`scale` of `value` as a number argument may be written: half of 375 pixels is 187 or 188, both what a
    person who said "half" meant."""
    exact = value * scale.numerator / scale.denominator
    return [float(math.floor(exact)), float(math.ceil(exact))] if integer else [exact]


def with_grounded_numbers(parameters: dict[str, Any], numbers: RunNumbers) -> dict[str, Any]:
    """A copy of a tool's parameters where each optional numeric argument is an `enum` of the numbers
    the run has seen that fit it; one with none to offer can no longer be written (its default holds).
    A choice such as `"auto" | number` keeps its other branches. A required number that is never a guess
    (tools.schema.said_or_read) is narrowed the same way; with none to offer it is left as it is, and the
    tool cannot be called yet (see ids.unfillable)."""
    def grounded(name: str, required: bool) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
        def narrow(schema: dict[str, Any]) -> dict[str, Any] | None:
            if schema.get("type") not in ("integer", "number") or "enum" in schema or "const" in schema:
                return schema
            choices = numbers.choices(schema, name)
            if not choices:
                return schema if required else None
            bounds = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
            return {key: value for key, value in schema.items() if key not in bounds} | {"enum": choices}

        return narrow

    def ground(schema: Any, required: bool, name: str) -> Any:
        if not isinstance(schema, dict) or (required and not schema.get(SAID_OR_READ)):
            return schema
        return each_branch(schema, grounded(name, required))

    return each_property(parameters, ground)


def number_unread(schema: Any) -> bool:
    """Whether a (grounded) argument is a number that is never a guess and the run has read none for it."""
    return isinstance(schema, dict) and bool(schema.get(SAID_OR_READ)) and "enum" not in schema


def leading_json(text: str) -> tuple[Any, str] | None:
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
