"""What a running tool may know about the call it serves: the file store, path policy, progress."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from tools.files import FileStore


@dataclass(frozen=True)
class ToolContext:
    """Passed to every invocation; a tool asks for it by declaring a `ToolContext` parameter.

    Attributes:
        file_store: where artifacts go and where `file-…` ids are looked up; None keeps
            artifacts inline.
        allow_local_paths: whether `Image`/`File` arguments may name a path on this machine.
            True for a person at the CLI or in Python; False for anything reached over a
            network (HTTP, MCP, agents serving remote users), so a caller cannot read files.
        call_id: the id of the tool call being served, when there is one.
        on_progress: long-running tools report progress here (a dict per update).
    """

    file_store: FileStore | None = None
    allow_local_paths: bool = False
    call_id: str | None = None
    on_progress: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False)

    def with_call(self, call_id: str | None) -> ToolContext:
        return replace(self, call_id=call_id)

    def report_progress(self, **update: Any) -> None:
        if self.on_progress is not None:
            self.on_progress(update)


_current: ContextVar[ToolContext] = ContextVar("agentd_tool_context", default=ToolContext())


def current_context() -> ToolContext:
    return _current.get()


def use_context(context: ToolContext):
    """Set the context for the current task (and threads started from it); returns the reset token."""
    return _current.set(context)


def reset_context(token) -> None:
    _current.reset(token)
