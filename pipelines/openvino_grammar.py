"""Our constraints as grammars for the older xgrammar inside OpenVINO GenAI.

We compile a Constraint with our own xgrammar (`decoding.grammar_of`) and hand OpenVINO its EBNF text.
Things in that text the older parser lacks or handles slowly, rewritten here:
- `{n, -1}` (n or more) repetition: written `*`, `+` or `{n,}`;
- the `Regex("…", json_string=true)` macro (a JSON schema `pattern`): written as the rules our xgrammar
  makes of the regex, when the regex cannot produce a character a JSON string must escape;
- long bounded repetition (`maxLength`, `maxItems`): the older compiler makes a parser state per
  repetition, so `x{0, 120}` is written as repetitions of repetitions, `(x{10}){0,11} x{0,9} |
  (x{10}){12}`: the same strings, about 2√n states instead of n;
- rules with the same body (every string property has its own `…_characters` rule, every tool its own
  copy of a shape another tool has): merged into one, so the compiler works on each once.
Compile time on this CPU (the pipeline compiles inside its step, stalling every stream of the batch):
an agent's ReAct step 0.91 s → 0.22 s, a ReWOO plan 0.98 s → 0.25 s, the 24 tools' step with every
string bounded at 240 characters 46 s → 0.6 s. Bounds over _LONGEST_BOUND are still left to
max_tokens where the constraint allows it (`Constraint.lengths_advisory`: an agent's step is cheaper
without them), and bounds over _LONGEST_EXACT raise Unsupported.
What still cannot be written for it raises Unsupported: the transformers engine then enforces it.
"""

from __future__ import annotations

import codecs
import math
import re

from pipelines.decoding import grammar_of
from pipelines.engine import Constraint

_UNBOUNDED = re.compile(r"\{(\d+), -1\}")
_BOUNDED = re.compile(r"\{(\d+), (\d+)\}")
# Up to the agents' thought (120 characters: a small model otherwise thinks until max_tokens).
_LONGEST_BOUND = 128
# A user's bound is a contract: enforced on the pipeline up to this (three strings bounded at 2,000
# characters compile in 0.8 s), by the transformers engine beyond.
_LONGEST_EXACT = 4096
_NESTED_ABOVE = 16  # a repetition over this many more than its least is written nested
_ESCAPED_QUESTION_MARK = re.compile(r"(?<!\\)((?:\\\\)*)\\\?")  # an odd number of backslashes, then ?
_REGEX_MACRO = re.compile(r'Regex\("((?:[^"\\]|\\.)*)"(?:, json_string=(true|false))?\)')
# What a regex may not contain to be safe inside a JSON string: a wildcard or negated class could
# produce a quote, backslash or control character, which JSON would need escaped.
_UNSAFE_IN_JSON_STRING = re.compile(r"(?<!\\)\.|\[\^|\\[sSWDbB]")
_REGEX_RULE = re.compile(r"\broot(_\d+)?\b")
_MACRO = re.compile(r"\b[A-Z][A-Za-z]*\(")
# One element of a rule's body — a string literal, a character class or a rule name — and its bound if
# it has one: what is inside a literal or a class is never read as a name or a bound.
_ELEMENT = re.compile(r'("(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|\b[A-Za-z_]\w*)(?:\{(\d+), (\d+)\})?')


class Unsupported(Exception):
    """A constraint the pipeline's grammar parser cannot take (or would take minutes to compile)."""


def openvino_grammar(constraint: Constraint) -> str:
    """The constraint's grammar as OpenVINO's xgrammar takes it. Raises ConstraintError (from our
    compiler: the schema cannot be enforced at all) or Unsupported (not by this pipeline)."""
    text = older_ebnf(str(grammar_of(constraint)))
    text = _without_regex_macros(text)
    if constraint.lengths_advisory:
        text = relaxed_bounds(text)
    elif any(int(bound[2]) > _LONGEST_EXACT for bound in _BOUNDED.finditer(text)):  # anywhere: erring safe
        raise Unsupported("a string bound longer than the pipeline compiles in reasonable time")
    unknown = {m[0] for m in _MACRO.finditer(text)} - {"TagDispatch("}
    if unknown:
        raise Unsupported(f"grammar constructs the pipeline's parser lacks: {sorted(unknown)}")
    return shared_rules(nested_repeats(text))


def older_ebnf(text: str) -> str:
    """`{n, -1}` written without -1, and a `?` escaped in a string literal unescaped."""
    text = _ESCAPED_QUESTION_MARK.sub(r"\1?", text)
    return _UNBOUNDED.sub(lambda m: {"0": "*", "1": "+"}.get(m[1], f"{{{m[1]},}}"), text)


def relaxed_bounds(text: str) -> str:
    """The grammar with its repeats bounded above _LONGEST_BOUND left unbounded above."""
    def loosen(match: re.Match) -> str:
        if match[2] is None or int(match[3]) <= _LONGEST_BOUND:
            return match[0]
        return match[1] + {0: "*", 1: "+"}.get(int(match[2]), f"{{{match[2]},}}")

    return _ELEMENT.sub(loosen, text)


def nested_repeats(text: str) -> str:
    """`x{low, high}` with a wide range written as repetitions of `k` ≈ √(high − low): exactly the same
    strings (below high − low by a multiple of k and a remainder under k, or the whole range), with
    about 2√n parser states in the older compiler instead of n."""
    def nest(match: re.Match) -> str:
        element, low, high = match[1], match[2], match[3]
        span = int(high) - int(low) if low is not None else 0
        if span <= _NESTED_ABOVE:
            return match[0]
        k = math.isqrt(span)
        blocks, rest = divmod(span, k)
        shorter = f"({element}{{{k}}}){{0,{blocks - 1}}} {element}{{0,{k - 1}}}"
        longest = f"({element}{{{k}}}){{{blocks}}}" + (f" {element}{{0,{rest}}}" if rest else "")
        least = f"{element}{{{low}}} " if int(low) else ""
        return f"({least}(({shorter}) | ({longest})))"

    return _ELEMENT.sub(nest, text)


def shared_rules(text: str) -> str:
    """The grammar with rules whose bodies are the same merged into the first of them (repeatedly:
    merging makes the rules that refer to them the same in turn). The root keeps its name."""
    bodies: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, body = line.partition(" ::= ")
        if not sep or not _is_name(name) or name in bodies:
            return text  # not one rule per line as our compiler writes them: left as it is
        bodies[name] = body
    while True:
        first: dict[str, str] = {}
        merged = {}
        for name, body in bodies.items():
            if body in first and name != "root":
                merged[name] = first[body]
            else:
                first.setdefault(body, name)
        if not merged:
            return "".join(f"{name} ::= {body}\n" for name, body in bodies.items())
        bodies = {name: _ELEMENT.sub(lambda m: merged.get(m[1], m[1]) + m[0][len(m[1]):], body)
                  for name, body in bodies.items() if name not in merged}


def _is_name(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z_]\w*", text) is not None


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
