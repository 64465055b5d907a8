"""What chat and text completions share: finding the engine, running n choices at once,
accounting for metrics, and wrapping a chunk stream as SSE."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from sse_starlette import EventSourceResponse

from agentd.server.errors import APIError, error_body
from agentd.server.metrics import ServerMetrics
from pipelines.engine import EngineError, GenerationRequest, SamplingParams, TextDelta, TextEngine
from pipelines.registry import ModelRegistry


def find_engine(registry: ModelRegistry, model: str) -> TextEngine:
    if model in registry.engines:
        return registry.engines[model]
    if model in registry.failures:
        raise APIError(503, f"model {model} failed to load: {registry.failures[model]}", param="model")
    if model in registry.specs:
        raise APIError(503, f"model {model} is still loading; try again shortly", param="model")
    raise APIError(
        404, f"The model `{model}` does not exist. Available: {sorted(registry.specs)}",
        param="model", code="model_not_found",
    )


def sampling_params(body: Any, max_tokens: int | None) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_strings(),
    )


def fan_out(request: GenerationRequest, n: int) -> list[GenerationRequest]:
    """n independent choices; a seeded request gives each choice its own, reproducible seed."""
    seed = request.params.seed
    return [
        replace(request, params=replace(request.params, seed=None if seed is None else seed + i))
        for i in range(n)
    ]


async def validate_all(engine: TextEngine, requests: list[GenerationRequest]) -> None:
    """Reject a request that cannot fit before any stream starts."""
    try:
        for request in {r.prompt or id(r.messages): r for r in requests}.values():
            await engine.validate(request)
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


@dataclass
class RequestRecord:
    """Times and counts one request, then reports them to the metrics once."""

    metrics: ServerMetrics
    endpoint: str
    model: str
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __post_init__(self) -> None:
        self.metrics.in_flight.labels(self.endpoint).inc()

    def saw(self, delta: TextDelta) -> None:
        if self.first_token is None and (delta.text or delta.finish_reason):
            self.first_token = time.perf_counter()
        if delta.finish_reason:
            self.prompt_tokens += delta.prompt_tokens
            self.completion_tokens += delta.completion_tokens

    def done(self, status: int) -> None:
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
            yield json.dumps(error_body(error.status, error.message, error.param))
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        except Exception as error:  # noqa: BLE001 - reported to the client, logged by metrics
            status = 500
            yield json.dumps(error_body(500, f"generation failed: {error}"))
        finally:
            record.done(status)
        yield "[DONE]"

    return EventSourceResponse(events(), sep="\n", ping=600)
