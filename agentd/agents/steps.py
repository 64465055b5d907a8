"""The typed steps an agent run streams: the client, the run trace and the tests see the same objects.

Each step has a readable `text()` (what goes into `delta.reasoning_content`) and a
`to_dict()` (the structured copy in `delta.agent_step`, with `type` naming the class).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from agentd.llm.chat_model import ToolCall


@dataclass
class Step:
    type: ClassVar[str] = "step"
    # Which part of a graph made the step (a planner's sub-question, say); empty for the main loop.
    node: str = field(default="", kw_only=True)

    def text(self) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass
class Thought(Step):
    type: ClassVar[str] = "thought"
    content: str

    def text(self) -> str:
        return f"Thought: {self.content}"


@dataclass
class ToolCallStep(Step):
    type: ClassVar[str] = "tool_call"
    call: ToolCall

    def text(self) -> str:
        return f"Action: {self.call.name}({json.dumps(self.call.arguments, ensure_ascii=False)})"

    def to_dict(self) -> dict[str, Any]:
        # Clients have always read `call_id`, `name` and `arguments` at the top level of the step.
        return {"type": self.type, "node": self.node, "call_id": self.call.id, "name": self.call.name,
                "arguments": self.call.arguments}


@dataclass
class Observation(Step):
    type: ClassVar[str] = "observation"
    call_id: str
    name: str
    content: str
    is_error: bool = False
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    # The id of the earlier identical call whose result this repeats (the call was not run again).
    repeat_of: str = ""

    def text(self) -> str:
        notes = (", error" if self.is_error else "") + (f", same call as {self.repeat_of}" if self.repeat_of else "")
        return f"Observation ({self.name}{notes}): {self.content}"


@dataclass
class ToolProgress(Step):
    """A long-running tool saying how far it got (a fine-tune's step and loss, say)."""

    type: ClassVar[str] = "tool_progress"
    call_id: str
    name: str
    update: dict[str, Any]

    def text(self) -> str:
        parts = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.update.items())
        return f"Progress ({self.name}): {parts}"


@dataclass
class Plan(Step):
    """A ReWOO plan or a planner's sub-question graph."""

    type: ClassVar[str] = "plan"
    items: list[dict[str, Any]]

    def text(self) -> str:
        lines = []
        for item in self.items:
            if "tool" in item:
                lines.append(f"{item['id']} = {item['tool']}[{json.dumps(item['arguments'], ensure_ascii=False)}]")
            else:
                after = f" (after {', '.join(item['depends_on'])})" if item.get("depends_on") else ""
                lines.append(f"{item['id']}: {item['question']}{after}")
        return "Plan:\n" + "\n".join(lines)


@dataclass
class Retry(Step):
    """Output the graph could not use (a plan that does not check, a step that does not parse)."""

    type: ClassVar[str] = "retry"
    reason: str
    attempt: int

    def text(self) -> str:
        return f"Retry {self.attempt}: {self.reason}"


@dataclass
class NodeStarted(Step):
    type: ClassVar[str] = "node_started"
    label: str

    def text(self) -> str:
        return f"Started {self.node}: {self.label}"


@dataclass
class NodeDone(Step):
    type: ClassVar[str] = "node_done"
    label: str
    summary: str = ""

    def text(self) -> str:
        return f"Done {self.node}: {self.summary or self.label}"


@dataclass
class ApprovalRequired(Step):
    type: ClassVar[str] = "approval_required"
    calls: list[ToolCall]
    thread_id: str = ""

    def text(self) -> str:
        listed = ", ".join(f"{c.name}({json.dumps(c.arguments, ensure_ascii=False)})" for c in self.calls)
        return f"Waiting for approval: {listed}"


@dataclass
class AnswerDelta(Step):
    """A piece of the final answer as the model writes it. The pieces of a run add up to the start
    of its FinalAnswer's answer (links to the files the run made may follow); the run trace keeps
    only the FinalAnswer."""

    type: ClassVar[str] = "answer_delta"
    content: str

    def text(self) -> str:
        return self.content


@dataclass
class FinalAnswer(Step):
    type: ClassVar[str] = "final_answer"
    answer: str
    sources: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "Final answer ready."


@dataclass
class RunFailed(Step):
    type: ClassVar[str] = "error"
    message: str

    def text(self) -> str:
        return f"Stopped: {self.message}"

