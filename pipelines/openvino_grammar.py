"""Our constraints as grammars for the older xgrammar inside OpenVINO GenAI.

We compile a Constraint with our own xgrammar (`decoding.grammar_of`) and hand OpenVINO its EBNF text.
Three things in that text the older parser lacks or handles badly, rewritten here:
- `{n, -1}` (n or more) repetition: written `*`, `+` or `{n,}`;
- the `Regex("…", json_string=true)` macro (a JSON schema `pattern`): written as the rules our xgrammar
  makes of the regex, when the regex cannot produce a character a JSON string must escape;
- long bounded repetition (`maxLength`): the older compiler makes a parser state per repetition and a
  token mask per state (the 24 tools of an agent step, strings bounded at 240 characters, took 61 s to
  compile; 2 s with the long bounds unbounded), so a bound over 128 is left to max_tokens where the
  constraint allows it (`Constraint.lengths_advisory`).
What still cannot be written for it raises Unsupported: the transformers engine then enforces it.
"""

from __future__ import annotations

import codecs
import re

from pipelines.decoding import grammar_of
from pipelines.engine import Constraint

_UNBOUNDED = re.compile(r"\{(\d+), -1\}")
_BOUNDED = re.compile(r"\{(\d+), (\d+)\}")
# Up to the agents' thought (120 characters: a small model otherwise thinks until max_tokens), ≈ 1 s more.
_LONGEST_BOUND = 128
_ESCAPED_QUESTION_MARK = re.compile(r"(?<!\\)((?:\\\\)*)\\\?")  # an odd number of backslashes, then ?
_REGEX_MACRO = re.compile(r'Regex\("((?:[^"\\]|\\.)*)"(?:, json_string=(true|false))?\)')
# What a regex may not contain to be safe inside a JSON string: a wildcard or negated class could
# produce a quote, backslash or control character, which JSON would need escaped.
_UNSAFE_IN_JSON_STRING = re.compile(r"(?<!\\)\.|\[\^|\\[sSWDbB]")
_REGEX_RULE = re.compile(r"\broot(_\d+)?\b")
_MACRO = re.compile(r"\b[A-Z][A-Za-z]*\(")


class Unsupported(Exception):
    """A constraint the pipeline's grammar parser cannot take (or would take minutes to compile)."""


def openvino_grammar(constraint: Constraint) -> str:
    """The constraint's grammar as OpenVINO's xgrammar takes it. Raises ConstraintError (from our
    compiler: the schema cannot be enforced at all) or Unsupported (not by this pipeline)."""
    text = older_ebnf(str(grammar_of(constraint)))
    text = _without_regex_macros(text)
    relaxed = relaxed_bounds(text)
    if relaxed != text and not constraint.lengths_advisory:
        raise Unsupported("a string bound longer than the pipeline compiles in reasonable time")
    unknown = {m[0] for m in _MACRO.finditer(relaxed)} - {"TagDispatch("}
    if unknown:
        raise Unsupported(f"grammar constructs the pipeline's parser lacks: {sorted(unknown)}")
    return relaxed


def older_ebnf(text: str) -> str:
    """`{n, -1}` written without -1, and a `?` escaped in a string literal unescaped."""
    text = _ESCAPED_QUESTION_MARK.sub(r"\1?", text)
    return _UNBOUNDED.sub(lambda m: {"0": "*", "1": "+"}.get(m[1], f"{{{m[1]},}}"), text)


def relaxed_bounds(text: str) -> str:
    """The grammar with its repeats bounded above _LONGEST_BOUND left unbounded above."""
    def loosen(match: re.Match) -> str:
        low, high = int(match[1]), int(match[2])
        return match[0] if high <= _LONGEST_BOUND else {0: "*", 1: "+"}.get(low, f"{{{low},}}")

    return _BOUNDED.sub(loosen, text)


def _without_regex_macros(text: str) -> str:
    import xgrammar

    rules: list[str] = []

    def rewrite(match: re.Match) -> str:
        try:
            pattern = codecs.decode(match[1].encode("ascii"), "unicode_escape")
        except (UnicodeError, ValueError):
            raise Unsupported("a pattern the pipeline's grammar cannot take") from None
        if _UNSAFE_IN_JSON_STRING.search(pattern):
            raise Unsupported(f"the pattern {pattern!r} in a grammar without regular expressions")
        name = f"regex_{len(rules)}"
        ebnf = str(xgrammar.Grammar.from_regex(pattern)).strip()
        rules.append(_REGEX_RULE.sub(lambda m: name + (m[1] or ""), ebnf))
        return name

    text = _REGEX_MACRO.sub(rewrite, text)
    return "\n".join([text.rstrip("\n"), *rules]) + "\n" if rules else text
