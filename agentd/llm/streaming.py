"""Passing an answer on while the model writes it.

A chat model's `on_text` / `on_answer` callbacks get pieces whose concatenation is exactly the
text the call returns (stripped, as agents keep it): `TrimmedStream` holds back leading and
trailing whitespace so that holds. `AnswerArgumentStream` reads a ReAct step's JSON as it is
generated and passes on the `answer` string of its `final_answer` call, escapes decoded; an
answer caught in a loop (the same words over and over, as a small model can write until its
string limit) stops the generation with `StopGeneration`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

TextCallback = Callable[[str], None]

# Where a final_answer call's answer text starts in a step: the constrained output writes `name`
# before `arguments` (the schema's order); unescaped quotes cannot occur inside a JSON string,
# so the thought cannot fake this.
_ANSWER_START = re.compile(r'"name"\s*:\s*"final_answer"\s*,\s*"arguments"\s*:\s*\{\s*"answer"\s*:\s*"')
# An answer ending in the same piece of text this many times over is in a loop…
LOOP_REPEATS = 3
# …for pieces of these lengths (in characters).
LOOP_PIECE = range(6, 121)
_WORDS = re.compile(r"\w\w.*\s|\s.*\w\w", re.S)


class StopGeneration(Exception):
    """Raised by an `on_delta` callback: the rest of the output is not wanted."""


def in_a_loop(text: str) -> bool:
    """Whether `text` ends with the same piece LOOP_REPEATS times in a row."""
    for size in LOOP_PIECE:
        if size * LOOP_REPEATS > len(text):
            break
        unit = text[-size:]
        # Words said again, not a rule of dashes or a long number.
        earlier = (text[-size * (n + 1):len(text) - size * n] for n in range(1, LOOP_REPEATS))
        if _WORDS.search(unit) and all(piece == unit for piece in earlier):
            return True
    return False


class TrimmedStream:
    """Passes text on as it comes, except whitespace at the start and a run of whitespace at the
    end (held until more text follows): the pieces add up to the stripped whole."""

    def __init__(self, emit: TextCallback):
        self.emit = emit
        self.started = False
        self.pending = ""
        self.sent = ""

    def __call__(self, text: str) -> None:
        if not self.started:
            text = text.lstrip()
            if not text:
                return
            self.started = True
        text = self.pending + text
        body = text.rstrip()
        self.pending = text[len(body):]
        if body:
            self.sent += body
            self.emit(body)


class AnswerArgumentStream:
    """Fed the raw pieces of a ReAct step, passes on the text of its final_answer's `answer`."""

    def __init__(self, emit: TextCallback):
        self.out = TrimmedStream(emit)
        self.raw = ""
        self.start: int | None = None  # where the answer string's first character is in `raw`
        self.decoded = 0  # characters of the answer already passed on
        self.closed = False

    def __call__(self, piece: str) -> None:
        if self.closed:
            return
        self.raw += piece
        if self.start is None:
            found = _ANSWER_START.search(self.raw)
            if found is None:
                return
            self.start = found.end()
        text, self.closed = decode_string_prefix(self.raw[self.start:])
        if len(text) > self.decoded:
            self.out(text[self.decoded:])
            self.decoded = len(text)
            if not self.closed and in_a_loop(text.rstrip()):
                raise StopGeneration("the answer repeats itself")


def decode_string_prefix(raw: str) -> tuple[str, bool]:
    """The decoded text of the JSON string body `raw` (the part after its opening quote) as far as
    it is complete, and whether its closing quote has come. An escape cut in two (`\\`, `\\u00`,
    the first half of a surrogate pair) waits for the rest."""
    index, closed = 0, False
    while index < len(raw):
        char = raw[index]
        if char == '"':
            closed = True
            break
        if char != "\\":
            index += 1
            continue
        length = _escape_length(raw, index)
        if length is None:
            break
        index += length
    try:
        return json.loads(f'"{raw[:index]}"', strict=False), closed
    except json.JSONDecodeError:  # unconstrained output with a broken escape: pass nothing on
        return "", closed


def _escape_length(raw: str, index: int) -> int | None:
    """How long the escape at `index` is, or None while it is incomplete."""
    if index + 1 >= len(raw):
        return None
    if raw[index + 1] != "u":
        return 2
    if index + 6 > len(raw):
        return None
    try:
        code = int(raw[index + 2:index + 6], 16)
    except ValueError:
        return 6
    if 0xD800 <= code <= 0xDBFF:  # a high surrogate: decode it together with its low half
        if index + 7 > len(raw) or (raw[index + 6] == "\\" and index + 12 > len(raw)):
            return None
        if raw[index + 6:index + 8] == "\\u":
            return 12
    return 6
