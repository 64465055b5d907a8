"""Which chat model an agent thinks with, given the engine that serves its brain."""

from __future__ import annotations

from agentd.llm.chat_model import ChatModel
from agentd.llm.engine_chat import EngineChatModel
from agentd.llm.upstream_chat import UpstreamChatModel
from agentd.tool_use import TOOL_USE_MODEL_ID, known_tools, tool_router
from pipelines.engine import TextEngine
from pipelines.openai_engine import OpenAIUpstreamEngine


def chat_model_for(engine: TextEngine, model_id: str) -> ChatModel:
    """An upstream engine keeps its native tool calling; a local one decodes under constraints.

    The chat model learns about its engine as it goes (an upstream that refuses tool calling is
    asked for structured output from then on), so a caller keeps one per engine instance.
    """
    if isinstance(engine, OpenAIUpstreamEngine):
        return UpstreamChatModel(engine, model_id)
    if model_id == TOOL_USE_MODEL_ID:
        return EngineChatModel(engine, model_id, known_tools=known_tools(), router=tool_router())
    return EngineChatModel(engine, model_id)
