"""POST /v1/completions: raw prompts, no chat template."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from agentd.server.generation import (
    RequestRecord,
    fan_out,
    merged_streams,
    new_id,
    recorded,
    sampling_params,
    sse_response,
    validate_all,
)
from agentd.server.protocol import CompletionRequest
from pipelines.engine import GenerationRequest


async def create_completion(body: CompletionRequest, http: Request):
    state = http.app.state
    # Held until the response ends (the stream keeps it): the model is not unloaded under it.
    lease = await state.registry.lease(body.model)
    engine = lease.engine
    params = sampling_params(body, body.max_tokens)
    # Choice index = prompt index * n + sample index, as OpenAI numbers them.
    requests = [r for p in body.prompts() for r in fan_out(GenerationRequest(params=params, prompt=p), body.n)]
    await validate_all(engine, requests)
    record = RequestRecord(state.metrics, "completions", body.model)
    head = {"id": new_id("cmpl"), "created": int(time.time()), "model": body.model, "object": "text_completion"}
    echo = [p for p in body.prompts() for _ in range(body.n)] if body.echo else None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(_chunks(lease, requests, head, record, include_usage, echo), record)
    return await recorded(record, _complete(lease, requests, head, record, echo))


async def _complete(lease, requests, head, record, echo) -> dict[str, Any]:
    texts = [""] * len(requests)
    reasons = [""] * len(requests)
    async for index, delta in merged_streams(lease.engine, requests):
        record.saw(delta)
        texts[index] += delta.text
        reasons[index] = delta.finish_reason or reasons[index]
    choices = [
        {"index": i, "text": (echo[i] if echo else "") + text, "logprobs": None, "finish_reason": reasons[i]}
        for i, text in enumerate(texts)
    ]
    return {**head, "choices": choices, "usage": record.usage()}


async def _chunks(lease, requests, head, record, include_usage, echo) -> AsyncIterator[dict[str, Any]]:
    started: set[int] = set()
    async for index, delta in merged_streams(lease.engine, requests):
        record.saw(delta)
        text = delta.text
        if echo and index not in started:
            text = echo[index] + text
        started.add(index)
        if text or delta.finish_reason:
            choice = {"index": index, "text": text, "logprobs": None, "finish_reason": delta.finish_reason}
            yield {**head, "choices": [choice]}
    if include_usage:
        yield {**head, "choices": [], "usage": record.usage()}
