"""OpenAI's Responses API: POST /v1/responses (streamed or not), GET and DELETE /v1/responses/{id},
GET /v1/responses/{id}/input_items.

A response is made by the paths chat completions use (response_input turns it into a chat
request): a plain model's text and client-side function calls become `message` and
`function_call` items; an agent's steps become `reasoning` items, its server-side tool calls
`mcp_call` items with their output, and its answer the `message`, streamed as it is written.
Stored responses (the default) can be read back and continued with `previous_response_id`;
an agent's response continues its thread there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Request
from sse_starlette import ServerSentEvent
from starlette.background import BackgroundTask

from agentd.agents.runtime import AGENT_TYPES, AgentRun
from agentd.agents.steps import AnswerDelta, ApprovalRequired, FinalAnswer, Observation, RunFailed, ToolCallStep
from agentd.server.agents import final_text, start_agent_run, unsent
from agentd.server.chat import chat_chunk_stream
from agentd.server.errors import APIError
from agentd.server.generation import RecordedEventSource, RequestRecord
from agentd.server.openapi import MODEL_ERRORS
from agentd.server.response_events import Event, ResponseEvents, item_id
from agentd.server.response_input import ResponsesRequest, chat_request, input_items, refuse_unsupported
from agentd.server.response_store import ResponseStore
from pipelines.engine import EngineError

log = logging.getLogger("agentd.responses")

_NOT_FOUND = {404: {"description": "No stored response has this id"}}


def response_routes(router: APIRouter) -> None:
    @router.post("/responses", responses=MODEL_ERRORS)
    async def create(body: ResponsesRequest, request: Request):
        return await create_response(body, request)

    @router.get("/responses/{response_id}", responses=_NOT_FOUND)
    async def get(response_id: str, request: Request):
        return _stored(request, response_id)["response"]

    @router.delete("/responses/{response_id}", responses=_NOT_FOUND)
    async def delete(response_id: str, request: Request):
        if not request.app.state.responses.delete(response_id):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    @router.get("/responses/{response_id}/input_items", responses=_NOT_FOUND)
    async def input_item_list(response_id: str, request: Request, limit: int = 20,
                              order: Literal["asc", "desc"] = "desc", after: str | None = None):
        items = _stored(request, response_id)["context"]
        items = items[::-1] if order == "desc" else items
        ids = [item.get("id") for item in items]
        if after is not None:
            if after not in ids:
                raise APIError(400, f"after: no input item {after!r} in this response", param="after")
            items = items[ids.index(after) + 1:]
        page = items[:max(1, min(limit, 100))]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > len(page)}


async def create_response(body: ResponsesRequest, http: Request):
    refuse_unsupported(body)
    state = http.app.state
    store: ResponseStore = state.responses
    history: list[dict[str, Any]] = []
    thread_id = None
    if body.previous_response_id:
        previous = store.get(body.previous_response_id)
        if previous is None:
            raise APIError(404, f"no stored response with id {body.previous_response_id!r} (responses made with "
                                "store: false are not kept)", param="previous_response_id",
                           code="previous_response_not_found")
        history = previous["context"] + previous["response"]["output"]
        thread_id = previous["thread_id"]
    items = [_with_id(item) for item in input_items(body)]
    chat = chat_request(body, history + items)
    response = _skeleton(body, chat)
    builder = ResponseEvents(response)
    run: AgentRun | None = None
    try:
        if body.model in AGENT_TYPES:
            run = await start_agent_run(chat, http, thread_id)
            thread_id = response["thread_id"] = run.thread_id
            response["run_id"] = run.id
            record = RequestRecord(state.metrics, "responses", body.model)
            produced = _agent_events(run, builder, record)
        else:
            chunks, record = await chat_chunk_stream(chat, http, "responses")
            produced = _plain_events(chunks, builder, record)
    except APIError as error:
        if error.param == "response_format":  # named as this API names it
            error.param, error.message = "text.format", error.message.replace("response_format", "text.format")
        raise
    context = history + items

    def save() -> None:
        if body.store:
            store.save(response, context, thread_id)

    try:
        save()
    except BaseException:  # the store cannot be written (a 503): nothing may keep running for nobody
        if run is not None:
            await run.aclose()
        raise
    outcome = _Outcome()
    events = _finishing(produced, builder, record, save, outcome)
    if body.stream:
        source = RecordedEventSource(record, _sse(builder, events), sep="\n", ping=600)
        if run is not None:  # a client that leaves between two events leaves the run suspended: stop it
            source.background = BackgroundTask(run.aclose)
        return source
    try:
        async for _ in events:
            pass
    finally:
        if run is not None:
            await run.aclose()
    if outcome.error is not None:
        raise outcome.error
    return response


@dataclass
class _Outcome:
    """How the events ended, for a response that is not streamed: the error to answer with, if any."""

    error: APIError | None = None


async def _finishing(produced: AsyncIterator[list[Event]], builder: ResponseEvents, record: RequestRecord,
                     save: Callable[[], None], outcome: _Outcome) -> AsyncIterator[Event]:
    """The events, then how the response ended: recorded in the metrics and the store, and a failure
    as `response.failed` (after the first byte, the status code can no longer say it)."""
    status = 200
    try:
        async for events in produced:
            for event in events:
                yield event
    except (EngineError, APIError) as error:
        status = error.status
        outcome.error = error if isinstance(error, APIError) else APIError.from_engine(error)
        for event in builder.failed("server_error" if status >= 500 else "invalid_prompt", error.message):
            yield event
    except asyncio.CancelledError:
        status = 499  # the client went away
        builder.response["status"] = "cancelled"
        raise
    except Exception as error:  # noqa: BLE001 - reported to the client, logged here
        log.exception("response %s failed", builder.response["id"])
        status = 500
        outcome.error = APIError(500, "generation failed; the server log has the details")
        for event in builder.failed("server_error", f"generation failed: {type(error).__name__}"):
            yield event
    finally:
        record.done(status)
        save()


async def _sse(builder: ResponseEvents, events: AsyncIterator[Event]) -> AsyncIterator[ServerSentEvent]:
    for event in builder.started():
        yield _sent(event)
    async for event in events:
        yield _sent(event)


def _sent(event: Event) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(event, separators=(",", ":")), event=event["type"])


async def _plain_events(chunks: AsyncIterator[dict[str, Any]], builder: ResponseEvents,
                        record: RequestRecord) -> AsyncIterator[list[Event]]:
    finish = None
    async for chunk in chunks:
        if not chunk["choices"]:
            continue  # the usage chunk: the record has counted it
        choice = chunk["choices"][0]
        delta = choice["delta"]
        if "content" in delta and (delta["content"] or not builder.output):
            yield builder.text(delta["content"] or "")
        for call in delta.get("tool_calls") or []:
            if call.get("id"):
                yield builder.function_call(call["id"], call["function"]["name"])
            yield builder.function_arguments(call.get("function", {}).get("arguments") or "")
        finish = choice["finish_reason"] or finish
    yield builder.finished(record.usage(), "max_output_tokens" if finish == "length" else None)


async def _agent_events(run: AgentRun, builder: ResponseEvents, record: RequestRecord) -> AsyncIterator[list[Event]]:
    streamed = ""  # the answer's text already sent
    # Steps that come while the answer streams (ReAct's last thought is parsed after its answer) follow
    # the answer's message instead of cutting it in two.
    after_answer: list[str] = []
    async for step in run:
        if record.first_token is None:
            record.first_token = time.perf_counter()
        if isinstance(step, AnswerDelta):
            streamed += step.content
            yield builder.text(step.content)
        elif isinstance(step, FinalAnswer):
            rest = unsent(step.answer, streamed)
            if rest or not streamed:
                yield builder.text(rest)
            for text in after_answer:
                yield builder.reasoning(text)
        elif streamed and not isinstance(step, (ToolCallStep, Observation, ApprovalRequired, RunFailed)):
            after_answer.append(step.text())
        elif isinstance(step, ToolCallStep):
            yield builder.server_call(step.call.id, step.call.name, json.dumps(step.call.arguments, ensure_ascii=False))
        elif isinstance(step, Observation):
            yield builder.server_result(step.call_id, step.content, step.is_error) or builder.reasoning(step.text())
        else:
            yield builder.reasoning(step.text())
            if isinstance(step, (ApprovalRequired, RunFailed)):
                yield builder.text(unsent(final_text(step), streamed))
    yield builder.finished({})


def _skeleton(body: ResponsesRequest, chat: Any) -> dict[str, Any]:
    return {"id": item_id("resp"), "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "model": body.model, "output": [], "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens, "temperature": chat.temperature, "top_p": chat.top_p,
            "tools": body.tools or [], "tool_choice": body.tool_choice or "auto",
            "parallel_tool_calls": chat.parallel_tool_calls, "text": body.text or {"format": {"type": "text"}},
            "previous_response_id": body.previous_response_id, "metadata": body.metadata or {}, "user": body.user,
            "store": body.store, "background": False, "truncation": "disabled", "reasoning": None,
            "error": None, "incomplete_details": None, "usage": None}


_ITEM_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def _with_id(item: dict[str, Any]) -> dict[str, Any]:
    """An input item as stored and listed: typed, with an id."""
    kind = item.get("type") or "message"
    stored = {**item, "id": item.get("id") or item_id(_ITEM_PREFIXES.get(kind, "item")), "type": kind}
    if kind == "message" and isinstance(item.get("content"), str):  # listed as OpenAI lists it: in parts
        part = "output_text" if item.get("role") == "assistant" else "input_text"
        stored["content"] = [{"type": part, "text": item["content"]}]
    return stored


def _stored(request: Request, response_id: str) -> dict[str, Any]:
    found = request.app.state.responses.get(response_id)
    if found is None:
        raise _not_found(response_id)
    return found


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"no stored response with id {response_id!r}", param="response_id",
                    code="response_not_found")
