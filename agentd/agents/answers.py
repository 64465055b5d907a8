"""Answers that use what the tools returned.

When a graph must answer without another tool call (a ReAct run out of steps, ReWOO's solver),
a small model often restates the question instead. `CheckedAnswer` streams the model's answer
once its start shows that it answers, and otherwise replaces it with one quoting the last
result: `Here is what I found: …`. A reply written as a JSON object (a model trained on tool
steps writing one more step) is no answer either, and never goes out.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentd.agents.steps import AnswerDelta, Observation
from agentd.agents.context import StepWriter

# How much of an answer is judged before it goes out: a sentence ending after at least this many words…
_JUDGE_AFTER_WORDS = 8
# …or this many, sentence or not.
_JUDGE_AT_MOST_WORDS = 24
# An answer whose words are mostly the question's restates it.
_RESTATED_SHARE = 0.6
# A result quoted in a fallback answer is cut to the length a final answer may have.
_QUOTE_CHARS = 1200

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?\n]")
_FILLER = frozenset(
    "a an the is are was were be been of to in on at for by with and or it its this that these those "
    "what which who whom how why when where do does did can could would should will please me my i you "
    "your we our us there here than then so as from into about".split())


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def restates(answer: str, question: str, found: str = "") -> bool:
    """Whether `answer` is empty or mostly restates `question` without using the result `found`."""
    said = [w for w in words(answer) if w not in _FILLER]
    if not said:
        return True
    asked = set(words(question))
    if set(said) & (set(words(found)) - asked - _FILLER):
        return False  # it quotes something only the result had
    return sum(w in asked for w in said) / len(said) >= _RESTATED_SHARE


def found_answer(found: str) -> str:
    """The answer given when the model's own only restated the question."""
    quoted = found.strip()
    if len(quoted) > _QUOTE_CHARS:
        quoted = quoted[:_QUOTE_CHARS].rstrip() + " …"
    return f"Here is what I found: {quoted}"


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (json.JSONDecodeError, TypeError):
        return False


class CheckedAnswer:
    """The `on_text` of the model call that writes an answer, and the judge of that answer.

    With a result to fall back on, the start of the answer is held back until it can be judged
    (its first sentence, or enough words); an answer that restates the question never goes out
    and `final()` gives the fallback instead. Without a result, the answer streams as it comes.

    Args:
        write: where the AnswerDelta steps go (None: judge only, stream nothing).
        question: what the user asked.
        found: the last result a tool returned successfully ("" when none did).
    """

    def __init__(self, write: StepWriter | None, question: str, found: str):
        self.write = write
        self.question = question
        self.found = found
        self.verdict: bool | None = None if found.strip() else True  # True: the answer goes out
        self.held = ""
        self.sent = ""

    def __call__(self, piece: str) -> None:
        if self.verdict is False:
            return
        self.held += piece
        if not self.sent and self.held.lstrip().startswith("{"):
            self.verdict = None  # judged whole, at the end: a JSON step must not go out
            return
        if self.verdict is None and self._judgeable(piece):
            self.verdict = not restates(self.held, self.question, self.found)
        if self.verdict:
            self._send(self.held)

    def final(self, reply: str) -> str:
        """The answer to give, now that the model's reply is complete (and stripped); "" when
        it is no answer and no result was found to give instead."""
        if is_json_object(reply):
            return found_answer(self.found) if self.found.strip() else ""
        if self.verdict is None:
            self.verdict = not self.found.strip() or not restates(reply, self.question, self.found)
        if not self.verdict:
            return found_answer(self.found)
        if self.held and reply.startswith(self.sent):  # what was held back to be judged goes out now
            self._send(reply)
        return reply

    def _judgeable(self, piece: str) -> bool:
        # A sentence that ends once there are enough words: "What is 17 * 23? It is 391." is judged
        # whole, not at its question mark.
        count = len(words(self.held))
        return count >= _JUDGE_AT_MOST_WORDS or (count >= _JUDGE_AFTER_WORDS and bool(_SENTENCE_END.search(piece)))

    def _send(self, text: str) -> None:
        """Send what of `text` has not gone out yet."""
        if self.write is None or len(text) <= len(self.sent):
            return
        self.write(AnswerDelta(text[len(self.sent):]))
        self.sent = text


def with_reported_table(answer: str, steps: list[Any]) -> str:
    """The answer, with the markdown `table` the run's last tool report carried (a comparison of
    two models, say) appended when the answer does not show it: a small model quotes the
    sentence and drops the table, and the table is what the person asked to see."""
    for step in reversed(steps):
        if not isinstance(step, Observation) or step.is_error or step.repeat_of:
            continue
        try:
            report = json.loads(step.content)
        except (json.JSONDecodeError, TypeError):
            continue
        table = report.get("table") if isinstance(report, dict) else None
        if isinstance(table, str) and table.strip():
            return answer if table.strip() in answer else f"{answer.rstrip()}\n\n{table.strip()}"
    return answer
