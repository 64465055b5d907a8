"""Plain chat with a model on an upstream this server launched (a vLLM deployment), passed through.

The request goes to the upstream as the client sent it and the answer comes back as the
upstream's own bytes: no parsing into our deltas and re-encoding per token, which on a 2-core
machine shared with vLLM cost 12% of its tokens/s. Only the usage chunk is read, for metrics.
Requests that need our own handling (client-side `tools`, whose calls we parse from the text) go
the engine's usual way, as does any model the upstream serves under another name.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from agentd.server.errors import APIError, error_body
from agentd.server.generation import RequestRecord, recorded
from agentd.server.protocol import ChatCompletionRequest
from pipelines.engine import EngineError

# vLLM (and agentd) write compact JSON: the usage event is the one whose choices are empty.
_USAGE_MARK = b'"choices":[]'
_USAGE_FIELD = re.compile(rb'"(prompt_tokens|completion_tokens)":(\d+)')


def relayable(body: ChatCompletionRequest, engine: Any) -> bool:
    return (getattr(engine, "relay", False) and engine.upstream_model == body.model
            and not body.tools and body.tool_choice is None)


async def relay_chat(body: ChatCompletionRequest, lease: Any, record: RequestRecord) -> Response:
    payload = body.model_dump(mode="json", exclude_unset=True, by_alias=True)
    asked_usage = bool(body.stream_options and body.stream_options.include_usage)
    if body.stream:  # usage is asked for always, for the metrics, and passed on only if the client asked
        payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
        try:
            response = await lease.engine.relay_open("chat/completions", payload)
        except EngineError as error:
            lease.release()
            record.done(error.status)
            raise APIError.from_engine(error) from error

        async def finish() -> None:  # also when the client left before the first byte: the body never ran
            await response.aclose()
            lease.release()
            record.done(499)  # a no-op when the stream ended and recorded its own status

        return StreamingResponse(_passed_on(response, lease, record, asked_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                                 background=BackgroundTask(finish))
    try:
        return await recorded(record, _whole(lease, payload, record))
    finally:
        lease.release()  # idle time (keep_alive) counts from the end of the request


async def _whole(lease: Any, payload: dict[str, Any], record: RequestRecord) -> Response:
    response = await lease.engine.relay_open("chat/completions", payload)
    try:
        data = await response.aread()
    except httpx.HTTPError as error:
        raise EngineError(f"the upstream {lease.engine.info.meta['url']} failed mid-answer: {error}", status=502,
                          code="upstream_error") from error
    finally:
        await response.aclose()
    record.first_token = time.perf_counter()
    _count(record, data)
    return Response(data, media_type="application/json")


async def _passed_on(response: httpx.Response, lease: Any, record: RequestRecord,
                     asked_usage: bool) -> AsyncIterator[bytes]:
    """The upstream's bytes as they arrive (one send per read, not per line); only the usage
    event is looked at (counted, and dropped when the client did not ask for it)."""
    status, held, usage_seen = 200, b"", False
    try:
        async for chunk in response.aiter_bytes():
            if record.first_token is None:
                record.first_token = time.perf_counter()
            data, held = held + chunk, b""
            if not usage_seen:
                data, held, usage_seen = _take_usage(data, record, asked_usage)
            if data:
                yield data
        if held:
            yield held
    except httpx.HTTPError as error:
        status = 502
        message = f"the upstream {lease.engine.info.meta['url']} failed mid-stream: {error}"
        yield f"data: {json.dumps(error_body(502, message, None, 'upstream_error'))}\n\ndata: [DONE]\n\n".encode()
    except BaseException:
        status = 499  # the client went away (the generator was closed or cancelled)
        raise
    finally:
        await response.aclose()
        lease.release()
        record.done(status)


def _take_usage(data: bytes, record: RequestRecord, keep: bool) -> tuple[bytes, bytes, bool]:
    """(the whole events to send now, the unfinished one to hold for the next read, whether the
    usage event was among them). An upstream writes whole events, so nothing is usually held."""
    last = data.rfind(b"\n\n")
    if last < 0:
        return b"", data, False
    events, rest = data[:last + 2], data[last + 2:]
    at = events.find(_USAGE_MARK)
    if at < 0:
        return events, rest, False
    start, end = events.rfind(b"data:", 0, at), events.find(b"\n\n", at)
    for name, value in _USAGE_FIELD.findall(events[at:end]):
        setattr(record, name.decode(), getattr(record, name.decode()) + int(value))
    if keep or start < 0:
        return events, rest, True
    return events[:start] + events[end + 2:], rest, True


def _count(record: RequestRecord, data: bytes) -> None:
    try:
        usage = json.loads(data).get("usage") or {}
    except (ValueError, AttributeError):
        return
    record.prompt_tokens += int(usage.get("prompt_tokens") or 0)
    record.completion_tokens += int(usage.get("completion_tokens") or 0)
