"""`Tool`: what every tool is — metadata, a JSON schema, and one way to invoke it safely."""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from tools.context import ToolContext, current_context, reset_context, use_context
from tools.results import ErrorKind, ToolFailure, ToolResult, to_parts

DEFAULT_TIMEOUT_S = 60.0


class ToolError(Exception):
    """Raise from a tool to report a failure the caller should read (not a bug in the tool)."""

    kind: ErrorKind = "tool_error"

    def __init__(self, message: str, *, kind: ErrorKind | None = None, **details: Any):
        super().__init__(message)
        self.details = details
        if kind is not None:
            self.kind = kind


class ToolArgumentError(ToolError):
    kind = "invalid_arguments"


class Tool(ABC):
    """A named, described, schema-checked callable.

    Subclasses fill the metadata and implement `validate` and `_run`; `invoke` is the only way
    callers run a tool: it validates, applies the timeout, stores artifacts, and turns every
    failure into a `ToolResult` with an error instead of raising.

    Attributes:
        name: unique in a registry; letters, digits, `_` and `-`.
        description: what the tool does, for the model choosing it.
        parameters: the JSON schema of the arguments object.
        output_schema: the JSON schema of the result value, when it has one.
        timeout: seconds an invocation may take; None means `DEFAULT_TIMEOUT_S`.
        requires_approval: an agent must ask a person before calling it.
        long_running: the call may take minutes (it waits for a job, say). Only `timeout` bounds
            it: an agent run's own time limit is paused while it works. Progress it reports
            through its `ToolContext` streams to the agent's client as steps.
        changing: its result for the same arguments changes with time (a job's status), so an
            agent repeating the call is really asking again, not looping.
        source: where the tool lives (`local`, a remote URL, an MCP server).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    timeout: float | None = None
    requires_approval: bool = False
    long_running: bool = False
    changing: bool = False
    source: str = "local"

    @abstractmethod
    def validate(self, arguments: Mapping[str, Any]) -> Any:
        """Check arguments before the call; raise ToolArgumentError with a readable message."""

    @abstractmethod
    async def _run(self, validated: Any, context: ToolContext) -> Any:
        """Do the work; return a value (text, JSON-able, Image/File, list of those) or raise."""

    def definition(self) -> dict[str, Any]:
        """The OpenAI `tools` entry for this tool."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def info(self) -> dict[str, Any]:
        """Everything a listing shows: the definition plus the flags."""
        return {"object": "tool", "name": self.name, "description": self.description,
                "parameters": self.parameters, "output_schema": self.output_schema,
                "timeout": self.timeout or DEFAULT_TIMEOUT_S, "requires_approval": self.requires_approval,
                "long_running": self.long_running, "source": self.source}

    async def invoke(self, arguments: Mapping[str, Any] | str | None = None, *, context: ToolContext | None = None,
                     call_id: str | None = None, timeout: float | None = None) -> ToolResult:
        context = (context or current_context()).with_call(call_id)
        token = use_context(context)
        started = time.monotonic()
        limit = timeout or self.timeout or DEFAULT_TIMEOUT_S
        deadline = None

        def failed(kind: ErrorKind, message: str, **details: Any) -> ToolResult:
            return ToolResult(self.name, error=ToolFailure(kind, message, details), call_id=call_id,
                              duration_s=time.monotonic() - started)

        try:
            validated = self.validate(_as_mapping(arguments))
            async with asyncio.timeout(limit) as deadline:
                raw = await self._run(validated, context)
            content = to_parts(raw, context)
        except ToolError as error:
            return failed(error.kind, str(error), **error.details)
        except TimeoutError:
            if deadline is not None and deadline.expired():
                return failed("timeout", f"the call took longer than its {limit:g} s limit", timeout_s=limit)
            return failed("exception", "TimeoutError raised inside the tool")
        except Exception as error:  # a tool's bug must reach the agent as an observation, not crash the run
            frames = traceback.format_exception(error)[-3:]
            return failed("exception", f"{type(error).__name__}: {error}", traceback="".join(frames))
        finally:
            reset_context(token)
        return ToolResult(self.name, content=content, call_id=call_id, duration_s=time.monotonic() - started)


def _as_mapping(arguments: Mapping[str, Any] | str | None) -> Mapping[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as error:
            raise ToolArgumentError(f"arguments are not valid JSON ({error})") from None
    if not isinstance(arguments, Mapping):
        raise ToolArgumentError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    return arguments
