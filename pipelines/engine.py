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
    # OpenAI's penalties: each token's logit loses frequency_penalty for every time it was
    # generated so far, and presence_penalty once if it was generated at all.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    logprobs: int | None = None  # None: none; k: each output token's logprob and its top k
    echo: bool = False  # the first delta carries the prompt (with its logprobs when `logprobs` is set)

    def extras(self) -> list[str]:
        """The request fields beyond plain sampling that these params use (for engines that
        implement only some: a field must be honoured or refused, never ignored)."""
        used = {
            "presence_penalty": self.presence_penalty != 0.0,
            "frequency_penalty": self.frequency_penalty != 0.0,
            "logit_bias": bool(self.logit_bias),
            "logprobs": self.logprobs is not None,
            "echo": self.echo,
        }
        return [name for name, on in used.items() if on]


@dataclass(frozen=True)
class Constraint:
    """What the output must match.

    kind:
        ``json_object``: any JSON object.
        ``json_schema``: a JSON document matching ``schema``.
        ``tagged_json``: free text, but whatever follows ``trigger`` must be ``schema`` JSON
        closed by ``end`` (how a model calls tools when it may also answer in words).

    lengths_advisory: the schema's long string bounds (maxLength) guard against a model that
    rambles, they are not a contract: an engine that cannot enforce them cheaply may leave such
    strings to max_tokens (the openvino engine does; the agents' own step schemas say so).
    """

    kind: Literal["json_object", "json_schema", "tagged_json"]
    schema: dict[str, Any] | None = None
    trigger: str = ""
    end: str = ""
    stop_after_first: bool = False
    lengths_advisory: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """One completion: a raw ``prompt`` (text, or token ids in ``prompt_ids``) or chat
    ``messages`` (role/content strings)."""

    params: SamplingParams
    prompt: str | None = None
    prompt_ids: tuple[int, ...] | None = None
    messages: tuple[dict[str, str], ...] | None = None
    constraint: Constraint | None = None


@dataclass(frozen=True)
class TopLogprob:
    token: str
    bytes: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprobs:
    """One token of a prompt or an output, as the OpenAI API reports it.

    ``token`` is its text, or ``bytes:\\xe2\\x80`` (OpenAI's spelling) where the token is only
    part of a character; ``logprob`` is None for a prompt's first token (nothing predicts it).
    """

    token: str
    bytes: bytes
    logprob: float | None
    top: tuple[TopLogprob, ...] = ()
    offset: int | None = None  # characters before it in the echoed prompt (prompt tokens only)


@dataclass
class TextDelta:
    """A piece of output. The last delta of a stream has ``finish_reason`` and token counts.

    With ``params.logprobs`` a delta carries the tokens generated since the previous delta
    (their text may be held back a while: a stop string or a character still incomplete); with
    ``params.echo`` the first delta carries the prompt's text in ``echo`` and, with logprobs
    asked, its tokens in ``prompt_logprobs``.
    """

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprobs, ...] = ()
    echo: str | None = None
    prompt_logprobs: tuple[TokenLogprobs, ...] | None = None


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
    # The SamplingParams.extras() this engine honours; a request using another is refused.
    supported_extras: frozenset[str] = frozenset()

    def check_extras(self, params: SamplingParams) -> None:
        """Refuse, with a 400 naming the field, what this engine would otherwise ignore."""
        for name in params.extras():
            if name not in self.supported_extras:
                raise EngineError(f"model {self.info.id} does not support `{name}`", param=name)

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

    @property
    def prefix_cache(self) -> tuple[int, int] | None:
        """(prompt tokens found in the prefix cache, prompt tokens) since start; None without one."""
        return None

    # Scoring given text (evaluation, `echo` with logprobs): only engines that hold the weights
    # can; the others say so instead of answering something else.
    async def loglikelihoods(
        self, pairs: list[tuple[list[int], list[int]]], batch_size: int = 8
    ) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (summed continuation logprob, greedy?), in order."""
        raise self._no_prompt_logprobs()

    async def prompt_logprobs(self, ids: list[int], top_k: int = 0) -> list[Any]:
        """One `pipelines.scoring.TokenLogprob` per id; the first has logprob None."""
        raise self._no_prompt_logprobs()

    def _no_prompt_logprobs(self) -> EngineError:
        return EngineError(
            f"model {self.info.id} offers no prompt log-probabilities",
            status=400,
            param="model",
            code="prompt_logprobs_unsupported",
        )
