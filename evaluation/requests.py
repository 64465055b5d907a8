"""What a task asks of a model, what the model answers, and the interface every model under test has.

The four request types are lm-evaluation-harness's: `loglikelihood` (how likely a continuation
is after a context, and whether greedy decoding would produce it), `multiple_choice` (one
loglikelihood request per choice; a task type, not a request type), `loglikelihood_rolling`
(a whole text's likelihood, for perplexity) and `generate_until`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class RollingRequest:
    text: str


@dataclass(frozen=True)
class GenerateRequest:
    """A raw `prompt`, or chat `messages` (role/content dicts) for a model that takes them."""

    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    until: tuple[str, ...] = ()
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None


Request = LoglikelihoodRequest | RollingRequest | GenerateRequest


@dataclass(frozen=True)
class Loglikelihood:
    logprob: float  # the continuation's summed log-probability, natural log
    greedy: bool  # whether greedy decoding from the context gives exactly the continuation


@dataclass(frozen=True)
class Rolling:
    logprob: float  # the whole text's summed log-probability
    tokens: int  # how many tokens were scored


class EvaluationError(Exception):
    """A run that cannot go on, said so that a user can act (a 400 at the API, a failed job)."""

    def __init__(self, message: str, param: str | None = None, code: str = "evaluation_error"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass
class ModelInfo:
    id: str
    # What makes this model's outputs what they are (weights, adapter, endpoint and model name):
    # cached results are reused only under the same fingerprint.
    fingerprint: str
    chat_template: bool = False  # generation prompts go through the model's chat template
    meta: dict[str, Any] = field(default_factory=dict)


class EvalModel(abc.ABC):
    """A model under test: local weights, or any OpenAI-compatible endpoint.

    Each method answers its requests in order. `batch_size` bounds how many go to the model at
    once; the answers must not depend on it.
    """

    info: ModelInfo

    @abc.abstractmethod
    async def loglikelihood(self, requests: list[LoglikelihoodRequest], batch_size: int = 8) -> list[Loglikelihood]:
        ...

    @abc.abstractmethod
    async def loglikelihood_rolling(self, requests: list[RollingRequest], batch_size: int = 8) -> list[Rolling]:
        ...

    @abc.abstractmethod
    async def generate(self, requests: list[GenerateRequest], batch_size: int = 8) -> list[str]:
        ...

    async def check(self, needs_loglikelihood: bool) -> None:  # noqa: B027 - optional hook
        """Raise EvaluationError before a run if this model cannot serve it (an endpoint
        without prompt log-probabilities asked for log-likelihoods)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        ...
