"""The text engine interface every backend implements (transformers, OpenAI upstream, vLLM)."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None  # None: whatever the context has left
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Constraint:
    """What the output must match.

    kind:
        ``json_object``: any JSON object.
        ``json_schema``: a JSON document matching ``schema``.
        ``tagged_json``: free text, but whatever follows ``trigger`` must be ``schema`` JSON
        closed by ``end`` (how a model calls tools when it may also answer in words).
    """

    kind: Literal["json_object", "json_schema", "tagged_json"]
    schema: dict[str, Any] | None = None
    trigger: str = ""
    end: str = ""
    stop_after_first: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """One completion: either a raw ``prompt`` or chat ``messages`` (role/content strings)."""

    params: SamplingParams
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    constraint: Constraint | None = None


@dataclass
class TextDelta:
    """A piece of output. The last delta of a stream has ``finish_reason`` and token counts."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class EngineError(Exception):
    """A request the engine cannot serve; ``status`` says whose fault it is."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code


class ConstraintError(EngineError):
    """A constraint the engine cannot enforce (a JSON schema its grammar compiler rejects).
    The caller knows which request field the constraint came from and names it."""

    def __init__(self, message: str):
        super().__init__(message, status=400)


class ContextLengthExceeded(EngineError):
    def __init__(self, limit: int, prompt_tokens: int, max_tokens: int):
        super().__init__(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages or "
            "completion.",
            status=400,
            param="messages",
        )


@dataclass
class EngineInfo:
    id: str
    context_length: int
    owned_by: str = "agentd"
    meta: dict[str, Any] = field(default_factory=dict)


class TextEngine(abc.ABC):
    """Async, streaming, concurrent text generation behind one interface."""

    info: EngineInfo

    @abc.abstractmethod
    async def validate(self, request: GenerationRequest) -> int | None:
        """Check the request fits and its constraint can be enforced (raising EngineError,
        ConstraintError for the constraint, before any stream starts) and return the tokens
        its prompt takes, or None where only the backend knows. Slow checks (compiling a
        grammar) run off the event loop, and what they build is kept for `stream`."""

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        """Yield output as it is generated. Closing the iterator cancels the generation."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers and connections."""

    @property
    def active_sequences(self) -> int:
        return 0
