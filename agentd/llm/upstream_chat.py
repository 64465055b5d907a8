"""`UpstreamChatModel`: agents on any OpenAI-compatible server, with its native tool calling.

It talks through the serving engine's own SDK client, so an agent's brain uses
the same connection, key and error mapping as plain chat with that model. Servers without
tool calling (or that refuse `tool_choice: required`) fall back to `response_format`
json_schema with the same step schema the local engine is held to.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from agentd.llm.chat_model import (ChatModel, ChatReply, ToolCall, bounded_strings, callable_tools, describe_tools,
                                   final_answer_of, parse_json, prompt, reply_from_step, step_schema, string_limit)
from agentd.llm.streaming import TrimmedStream
from pipelines.engine import EngineError
from pipelines.openai_engine import OpenAIUpstreamEngine, upstream_error


class UpstreamChatModel(ChatModel):
    def __init__(self, engine: OpenAIUpstreamEngine, model_id: str):
        self.id = model_id
        self.engine = engine
        # Set to False, for good, the first time the upstream refuses tool calling with a 400.
        self.native_tools = True

    async def _create(self, messages: list[dict[str, Any]], **options: Any):
        engine = self.engine
        try:
            return await engine.client.chat.completions.create(
                model=engine.upstream_model, messages=_wire(messages), **options)
        except openai.APIError as error:
            raise upstream_error(error, engine.info.meta["url"]) from error

    async def chat(self, messages, *, max_tokens=512, temperature=0.0, on_text=None) -> str:
        if on_text is None:
            reply = await self._create(messages, max_tokens=max_tokens, temperature=temperature)
            return (reply.choices[0].message.content or "").strip()
        out, pieces = TrimmedStream(on_text), []
        try:
            async for chunk in await self._create(messages, max_tokens=max_tokens, temperature=temperature,
                                                  stream=True):
                text = chunk.choices[0].delta.content if chunk.choices else None
                if text:
                    pieces.append(text)
                    out(text)
        except openai.APIError as error:  # a stream broken after it started
            raise upstream_error(error, self.engine.info.meta["url"]) from error
        return "".join(pieces).strip()

    async def structured(self, messages, schema, *, max_tokens=512) -> Any:
        reply = await self._create(messages, max_tokens=max_tokens, temperature=0, response_format={
            "type": "json_schema", "json_schema": {"name": "reply", "schema": schema}})
        return parse_json(reply.choices[0].message.content or "", schema)

    async def act(self, messages, tools, *, max_calls=3, max_tokens=384, on_answer=None, only=None) -> ChatReply:
        # An upstream reads the tools it may call, so narrowing them narrows its listing too.
        tools = callable_tools(tools, only)
        reply = await self._step(messages, tools, max_calls, max_tokens)
        answer = final_answer_of(reply)
        if on_answer is not None and answer:
            on_answer(answer)  # the call's arguments come whole: the answer goes on in one piece
        return reply

    async def _step(self, messages, tools, max_calls: int, max_tokens: int) -> ChatReply:
        if self.native_tools:
            try:
                # Bounded strings let a constrained upstream close its JSON within max_tokens.
                bounded = [{**t, "function": {**t["function"], "parameters": bounded_strings(
                    t["function"]["parameters"], string_limit(t["function"]["name"]))}} for t in tools]
                reply = await self._create(messages, max_tokens=max_tokens, temperature=0, tools=bounded,
                                           tool_choice="required", parallel_tool_calls=max_calls > 1)
            except EngineError as error:
                if error.status != 400:
                    raise
                self.native_tools = False  # this server does not do tool calling: use structured output
            else:
                message = reply.choices[0].message
                calls = [ToolCall(c.id, c.function.name, _arguments(c.function.arguments))
                         for c in message.tool_calls or []][:max_calls]
                if any(call.arguments is None for call in calls):
                    return ChatReply(error="a tool call's arguments are not a JSON object", raw=str(message.tool_calls))
                if calls:
                    return ChatReply(content=(message.content or "").strip(), tool_calls=calls)
                return ChatReply(error="the model called no tool", raw=message.content or "")
        guided = [{"role": "system", "content": prompt("agent_step", tools=describe_tools(tools))}, *messages]
        reply = await self._create(guided, max_tokens=max_tokens, temperature=0, response_format={
            "type": "json_schema", "json_schema": {"name": "step", "schema": step_schema(tools, max_calls)}})
        return reply_from_step(reply.choices[0].message.content or "", tools, max_calls)


def _arguments(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _wire(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Agent transcripts in OpenAI's wire shape (assistant tool_calls with JSON-string arguments)."""
    wire = []
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            wire.append({"role": "assistant", "content": message.get("content") or None, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                for c in message["tool_calls"]]})
        elif message["role"] == "tool":
            wire.append({"role": "tool", "tool_call_id": message["tool_call_id"], "content": message["content"]})
        else:
            wire.append({"role": message["role"], "content": message.get("content") or ""})
    return wire
