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

What the person's own turns said surely (a value only some words mean, a count in its unit, a list of
names) is written, not left to the model (see `said`). Modules: `numbers`, `ids` and `words` (what a run
read, and the arguments narrowed to it), `said`, and `schemas` (walking a tool's parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentd.agents.files import RunFiles, with_file_choices
from agentd.agents.grounding.ids import RunIds, id_unread, not_starting_with, unfillable, with_grounded_ids
from agentd.agents.grounding.numbers import RunNumbers, leading_json, number_unread, with_grounded_numbers
from agentd.agents.grounding.said import with_said_names, with_said_values
from agentd.agents.grounding.schemas import unfilled_groups
from agentd.agents.grounding.words import RunWords, with_grounded_choices, with_grounded_names

__all__ = ["RunIds", "RunNumbers", "RunReading", "RunWords", "id_unread", "leading_json", "not_starting_with",
           "number_unread", "unfillable", "unfilled_groups", "with_grounded_choices", "with_grounded_ids",
           "with_grounded_names", "with_grounded_numbers", "with_said_names", "with_said_values"]


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
        parameters = with_said_names(with_said_values(parameters, self.asked, self.numbers), self.asked)
        return {**definition, "function": {**function, "parameters": parameters}}
