"""POST /v1/chat/completions for plain models, with client-side tool calling."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

from agentd.llm.tool_calls import CallStart, ContentPiece, ToolCallParser, plan_tool_calls
from agentd.server.errors import APIError
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
from agentd.server.protocol import ChatCompletionRequest, JsonObjectFormat, JsonSchemaFormat
from agentd.server.relay import relay_chat, relayable
from agentd.server.transcript import UnsupportedContent, to_template_messages
from pipelines.engine import Constraint, GenerationRequest, TokenLogprobs


def _tool_plan(body: ChatCompletionRequest):
    tools = [t.function.model_dump() for t in body.tools or []]
    choice = body.tool_choice
    if choice is not None and not tools:
        raise APIError(400, "`tool_choice` is only allowed when `tools` are given", param="tool_choice")
    if choice is not None and not isinstance(choice, str):
        if choice.function.name not in {t["name"] for t in tools}:
            raise APIError(
                400, f"tool_choice names `{choice.function.name}`, which is not among the tools",
                param="tool_choice",
            )
        choice = {"name": choice.function.name}
    return plan_tool_calls(tools, choice, body.parallel_tool_calls)


def _format_constraint(body: ChatCompletionRequest) -> Constraint | None:
    fmt = body.response_format
    if isinstance(fmt, JsonObjectFormat):
        return Constraint("json_object")
    if isinstance(fmt, JsonSchemaFormat):
        return Constraint("json_schema", fmt.json_schema.schema_)
    return None


def _generation_request(body: ChatCompletionRequest):
    plan = _tool_plan(body)
    try:
        messages = to_template_messages(body.messages, plan.prompt)
    except UnsupportedContent as error:
        raise APIError(400, str(error), param=error.param) from error
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs: only allowed when `logprobs` is true", param="top_logprobs")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    request = GenerationRequest(
        params=sampling_params(body, body.token_limit(), logprobs=logprobs),
        messages=tuple(messages),
        constraint=plan.constraint or _format_constraint(body),
    )
    return request, plan


class _ChoiceState:
    """Turns one choice's text into OpenAI deltas, tool calls included."""

    def __init__(self, index: int, parse_tools: bool, forced: bool, with_logprobs: bool = False):
        self.index = index
        self.parser = ToolCallParser(forced) if parse_tools else None
        self.started = False
        self.content = ""
        self.with_logprobs = with_logprobs
        self.logprob_items: list[dict[str, Any]] = []

    def logprobs(self, entries: tuple[TokenLogprobs, ...] | None = None) -> dict[str, Any] | None:
        """OpenAI's `choices[i].logprobs`: of `entries` (a chunk's tokens), or of all tokens so far."""
        if not self.with_logprobs:
            return None
        items = self.logprob_items if entries is None else [_logprob_item(e) for e in entries]
        return {"content": items, "refusal": None}

    def deltas(self, text: str, finish: str | None) -> list[dict[str, Any]]:
        """The deltas `text` makes; `finish` is the engine's finish reason on the last text."""
        last = finish is not None
        if self.parser is None:
            events = [ContentPiece(text)] if text else []
        else:
            events = self.parser.feed(text)
            if last:
                events += self.parser.finish(cut=finish == "length")
        out = []
        for event in events:
            if isinstance(event, ContentPiece):
                if not event.text:
                    continue
                self.content += event.text
                delta: dict[str, Any] = {"content": event.text}
            elif isinstance(event, CallStart):
                delta = {"tool_calls": [{
                    "index": event.index, "id": event.id, "type": "function",
                    "function": {"name": event.name, "arguments": ""},
                }]}
            else:
                delta = {"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]}
            out.append(self._with_role(delta))
        if last and not self.started:
            out.append(self._with_role({"content": ""}))
        return out

    def _with_role(self, delta: dict[str, Any]) -> dict[str, Any]:
        if not self.started:
            self.started = True
            return {"role": "assistant", **delta}
        return delta

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        calls = self.parser.calls if self.parser else []
        return [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls
        ]

    def finish_reason(self, engine_reason: str) -> str:
        # A call cut off by the token limit is not a finished call: clients would run it.
        if engine_reason == "length":
            return "length"
        return "tool_calls" if self.tool_calls else engine_reason


async def create_chat_completion(body: ChatCompletionRequest, http: Request):
    state = http.app.state
    # Held until the response ends (the stream keeps it): the model is not unloaded under it.
    lease = await state.registry.lease(body.model)
    if relayable(body, lease.engine):
        return await relay_chat(body, lease, RequestRecord(state.metrics, "chat", body.model))
    requests, choices, head = await _prepare(body, lease)
    record = RequestRecord(state.metrics, "chat", body.model)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(_chunks(lease, requests, choices, head, record, include_usage), record)
    return await recorded(record, _complete(lease, requests, choices, head, record))


async def chat_chunk_stream(body: ChatCompletionRequest, http: Request,
                            endpoint: str) -> tuple[AsyncIterator[dict[str, Any]], RequestRecord]:
    """The chunks a streamed chat completion sends, usage last, for another API to translate (never
    relayed: the translation needs the chunks), and the record that counts the request under
    `endpoint` in the metrics. Errors in the request raise before this returns."""
    state = http.app.state
    lease = await state.registry.lease(body.model)
    requests, choices, head = await _prepare(body, lease)
    record = RequestRecord(state.metrics, endpoint, body.model)
    return _chunks(lease, requests, choices, head, record, include_usage=True), record


async def _prepare(body: ChatCompletionRequest, lease):
    request, plan = _generation_request(body)
    requests = fan_out(request, body.n)
    await validate_all(lease.engine, requests, "tools" if plan.constraint else "response_format")
    choices = [_ChoiceState(i, plan.constraint is not None, plan.forced, body.logprobs) for i in range(body.n)]
    head = {"id": new_id("chatcmpl"), "created": int(time.time()), "model": body.model}
    return requests, choices, head


async def _chunks(lease, requests, choices, head, record, include_usage) -> AsyncIterator[dict[str, Any]]:
    base = {**head, "object": "chat.completion.chunk"}
    async for index, delta in merged_streams(lease.engine, requests):
        record.saw(delta)
        choice = choices[index]
        # The tokens of this delta go with its first piece (or alone, where the text is held back).
        logprobs = choice.logprobs(delta.logprobs) if delta.logprobs else None
        pieces = choice.deltas(delta.text, delta.finish_reason)
        if logprobs and not pieces:
            pieces = [choice._with_role({})]
        for piece in pieces:
            yield {**base, "choices": [{"index": index, "delta": piece, "logprobs": logprobs, "finish_reason": None}]}
            logprobs = None
        if delta.finish_reason:
            reason = choice.finish_reason(delta.finish_reason)
            yield {**base, "choices": [{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]}
    if include_usage:
        yield {**base, "choices": [], "usage": record.usage()}


async def _complete(lease, requests, choices, head, record) -> dict[str, Any]:
    reasons: dict[int, str] = {}
    async for index, delta in merged_streams(lease.engine, requests):
        record.saw(delta)
        choices[index].deltas(delta.text, delta.finish_reason)
        choices[index].logprob_items += [_logprob_item(e) for e in delta.logprobs]
        if delta.finish_reason:
            reasons[index] = choices[index].finish_reason(delta.finish_reason)
    out = []
    for choice in choices:
        message: dict[str, Any] = {"role": "assistant", "content": choice.content or None}
        if choice.tool_calls:
            message["tool_calls"] = choice.tool_calls
        elif message["content"] is None:
            message["content"] = ""
        out.append({"index": choice.index, "message": message, "logprobs": choice.logprobs(),
                    "finish_reason": reasons[choice.index]})
    return {**head, "object": "chat.completion", "choices": out, "usage": record.usage()}


def _logprob_item(entry: TokenLogprobs) -> dict[str, Any]:
    return {
        "token": entry.token, "logprob": entry.logprob, "bytes": list(entry.bytes),
        "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in entry.top],
    }
