"""The task interface the runner drives: samples to ask, a score per sample, an aggregate per task."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from evaluation.metrics import MetricValue
from evaluation.requests import EvalModel, Request


@dataclass
class Sample:
    id: str  # stable within a task version: the document's own id, or its index
    requests: list[Request]  # what the model must answer (empty when the data holds the outputs)
    target: Any  # JSON-serialisable: a gold choice index, a reference string or list of them
    prompt: str  # human-readable prompt, stored with the per-sample record
    doc: dict[str, Any]  # the (processed) source row, JSON-serialisable


@dataclass
class SampleScore:
    metrics: dict[str, Any]  # per-sample metric items: floats, or items a corpus metric aggregates
    output: str  # what the model said or chose, human-readable
    parsed: bool = True  # False: answer extraction could not parse the output


@dataclass
class ScoringContext:
    """What scoring may need from outside the library (the job or server provides these)."""

    # model id -> a judge model; "" asks for the run's configured judge
    judge: Callable[[str], Awaitable[EvalModel]] | None = None
    # run Python code in a sandbox with a timeout in seconds -> (exited cleanly, stdout)
    execute: Callable[[str, float], Awaitable[tuple[bool, str]]] | None = None


class Task(abc.ABC):
    name: str
    version: str
    output_type: str  # multiple_choice | generate_until | loglikelihood | loglikelihood_rolling
    num_fewshot: int = 0  # the default
    description: str = ""

    @abc.abstractmethod
    def samples(self, *, limit: int | None = None, num_fewshot: int | None = None, seed: int = 1234,
                chat_template: bool = False) -> list[Sample]:
        ...

    @abc.abstractmethod
    async def score(self, sample: Sample, responses: list, ctx: ScoringContext) -> SampleScore:
        """`responses[i]` answers `sample.requests[i]` (Loglikelihood | Rolling | str)."""

    @abc.abstractmethod
    def aggregate(self, scores: list[SampleScore]) -> dict[str, MetricValue]:
        ...

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        ...

