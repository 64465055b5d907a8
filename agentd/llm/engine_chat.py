"""`EngineChatModel`: agents on a local engine, with constrained decoding (or without)."""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

from agentd.llm.chat_model import (ChatModel, ChatReply, callable_tools, parse_json, prompt, reply_from_step,
                                   step_schema)
from agentd.llm.streaming import AnswerArgumentStream, StopGeneration, TextCallback, TrimmedStream
from pipelines.engine import Constraint, GenerationRequest, SamplingParams, TextEngine


class EngineChatModel(ChatModel):
    def __init__(self, engine: TextEngine, model_id: str, *, constrained: bool = True,
                 known_tools: frozenset[str] = frozenset(), router: Any = None):
        self.engine = engine
        self.id = model_id
        self.constrained = constrained
        self.known_tools = known_tools
        self.router = router

    async def _generate(self, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0,
                        schema: dict[str, Any] | None = None, on_delta: TextCallback | None = None) -> str:
        # The step and plan schemas bound strings to keep a small model from rambling, not as a contract.
        constraint = (Constraint("json_schema", schema, lengths_advisory=True)
                      if schema is not None and self.constrained else None)
        request = GenerationRequest(params=SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=0),
                                    messages=tuple(_flatten(messages)), constraint=constraint)
        await self.engine.validate(request)
        pieces = []
        try:
            # Closing the stream early (StopGeneration) tells the engine to stop computing it.
            async with aclosing(self.engine.stream(request)) as stream:
                async for delta in stream:
                    pieces.append(delta.text)
                    if on_delta is not None and delta.text:
                        on_delta(delta.text)
        except StopGeneration:
            pass  # the output so far is all there is (a ReAct step cut short reads as unfinished)
        return "".join(pieces)

    async def chat(self, messages, *, max_tokens=512, temperature=0.0, on_text=None) -> str:
        on_delta = TrimmedStream(on_text) if on_text is not None else None
        return (await self._generate(messages, max_tokens, temperature, on_delta=on_delta)).strip()

    async def structured(self, messages, schema, *, max_tokens=512) -> Any:
        if not self.constrained:
            messages = _with_system(messages, f"Reply with JSON only, valid against this schema:\n{json.dumps(schema)}")
        return parse_json(await self._generate(messages, max_tokens, schema=schema), schema)

    async def act(self, messages, tools, *, max_calls=3, max_tokens=384, on_answer=None, only=None) -> ChatReply:
        on_delta = AnswerArgumentStream(on_answer) if on_answer is not None else None
        allowed = callable_tools(tools, only)
        raw = await self._generate(self.step_messages(messages, tools), max_tokens,
                                   schema=step_schema(allowed, max_calls), on_delta=on_delta)
        return reply_from_step(raw, allowed, max_calls)

    def step_messages(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What the model reads for one ReAct step (the tool-use adapter is trained on exactly this)."""
        # A model trained on the tools needs neither their descriptions nor worked examples.
        name = "agent_step_tuned" if self.known_tools else "agent_step"
        return _with_system(messages, prompt(name, tools=self.list_tools(tools)))


def _with_system(messages: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{messages[0]['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _flatten(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Agent transcripts to what every chat template accepts: assistant steps as their JSON,
    tool results as user turns (SmolLM2's template has no tool role)."""
    flat = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            content = json.dumps({"thought": content, "tool_calls": [
                {"name": c.name, "arguments": c.arguments} for c in message["tool_calls"]]})
        elif role == "tool":
            role, content = "user", f"Result of {message.get('name', 'the tool')}: {content}"
        flat.append({"role": role, "content": content})
    return flat
