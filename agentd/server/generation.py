"""What chat and text completions share: finding the engine, running n choices at once,
accounting for metrics, and wrapping a chunk stream as SSE."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sse_starlette import EventSourceResponse

from agentd.server.errors import APIError, error_body
from agentd.server.metrics import ServerMetrics
from pipelines.engine import (
    ConstraintError,
    EngineError,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    TextEngine,
)


def sampling_params(body: Any, max_tokens: int | None, *, logprobs: int | None = None,
                    echo: bool = False) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_strings(),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=body.token_biases(),
        logprobs=logprobs,
        echo=echo,
    )


def fan_out(request: GenerationRequest, n: int) -> list[GenerationRequest]:
    """n independent choices; a seeded request gives each choice its own, reproducible seed."""
    seed = request.params.seed
    return [
        replace(request, params=replace(request.params, seed=None if seed is None else seed + i))
        for i in range(n)
    ]


async def validate_all(
    engine: TextEngine, requests: list[GenerationRequest], constraint_param: str | None = None
) -> None:
    """Reject a request that cannot fit, or whose constraint (from the request field
    `constraint_param`) cannot be enforced, before any stream starts."""
    try:
        for request in {r.prompt or r.prompt_ids or id(r.messages): r for r in requests}.values():
            engine.check_extras(request.params)  # also for an engine whose validate() forgets to
            await engine.validate(request)
    except ConstraintError as error:
        message = f"{constraint_param}: {error.message}" if constraint_param else error.message
        raise APIError(400, message, param=constraint_param) from error
    except EngineError as error:
        raise APIError.from_engine(error) from error


async def merged_streams(
    engine: TextEngine, requests: list[GenerationRequest]
) -> AsyncIterator[tuple[int, TextDelta]]:
    """Deltas of all choices as they come, tagged with the choice index. Leaving early (a
    disconnected client) cancels every choice's generation."""
    if len(requests) == 1:
        async for delta in engine.stream(requests[0]):
            yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, TextDelta | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, request: GenerationRequest) -> None:
        try:
            async for delta in engine.stream(request):
                await queue.put((index, delta))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            await queue.put((index, error))
            return
        await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(requests)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


T = TypeVar("T")


@dataclass
class RequestRecord:
    """Times and counts one request, then reports them to the metrics once: the first `done`
    counts, so every path may call it without leaving the in-flight gauge wrong."""

    metrics: ServerMetrics
    endpoint: str
    model: str
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finished: bool = False

    def __post_init__(self) -> None:
        self.metrics.in_flight.labels(self.endpoint).inc()

    def saw(self, delta: TextDelta) -> None:
        if self.first_token is None and (delta.text or delta.finish_reason):
            self.first_token = time.perf_counter()
        if delta.finish_reason:
            self.prompt_tokens += delta.prompt_tokens
            self.completion_tokens += delta.completion_tokens

    def done(self, status: int) -> None:
        if self.finished:
            return
        self.finished = True
        m = self.metrics
        m.in_flight.labels(self.endpoint).dec()
        m.requests.labels(self.endpoint, self.model, str(status)).inc()
        if status == 200:
            if self.first_token is not None:
                m.ttft.labels(self.model).observe(self.first_token - self.started)
            m.latency.labels(self.endpoint, self.model).observe(time.perf_counter() - self.started)
            m.prompt_tokens.labels(self.model).inc(self.prompt_tokens)
            m.completion_tokens.labels(self.model).inc(self.completion_tokens)

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


async def recorded(record: RequestRecord, work: Awaitable[T]) -> T:
    """Await a non-streamed request's work and report how it ended, whatever the ending."""
    try:
        result = await work
    except EngineError as error:
        record.done(error.status)
        raise APIError.from_engine(error) from error
    except APIError as error:
        record.done(error.status)
        raise
    except asyncio.CancelledError:
        record.done(499)  # the client went away
        raise
    except BaseException:
        record.done(500)
        raise
    record.done(200)
    return result


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def sse_response(chunks: AsyncIterator[dict[str, Any]], record: RequestRecord) -> EventSourceResponse:
    """Chunks as `data:` lines, then `data: [DONE]`. An error after the stream started can no
    longer change the status code, so it goes out as a `data: {"error": ...}` event."""

    async def events() -> AsyncIterator[str]:
        status = 200
        try:
            async for chunk in chunks:
                yield json.dumps(chunk, separators=(",", ":"))
        except (EngineError, APIError) as error:
            status = error.status
            yield json.dumps(error_body(error.status, error.message, error.param, error.code))
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        except Exception as error:  # noqa: BLE001 - reported to the client, logged by metrics
            status = 500
            yield json.dumps(error_body(500, f"generation failed: {error}"))
        finally:
            record.done(status)
        yield "[DONE]"

    return RecordedEventSource(record, events(), sep="\n", ping=600)


class RecordedEventSource(EventSourceResponse):
    """Reports the request as ended when the response is over, also where the client left
    before the event generator ran, or between two events (where the generator is closed
    only later, by the garbage collector)."""

    def __init__(self, record: RequestRecord, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._record = record

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._record.done(499)  # a no-op where the generator reported the outcome itself
