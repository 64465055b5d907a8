"""OpenAI chat messages turned into the role/content strings every chat template accepts."""

from __future__ import annotations

import json

from agentd.llm.tool_calls import TOOL_CALL_END, TOOL_CALL_START
from agentd.server.protocol import AssistantMessage, Content, ImagePart, Message, ToolMessage


class UnsupportedContent(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def content_text(content: Content | None, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if any(isinstance(part, ImagePart) for part in content):
        raise UnsupportedContent("this model accepts text only, not image parts", param)
    return "".join(part.text for part in content)


def to_template_messages(messages: list[Message], tool_prompt: str | None) -> list[dict[str, str]]:
    """Flatten messages; tool calls and results become text the model was told to expect."""
    flat: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        text = content_text(message.content, f"messages[{i}].content")
        if isinstance(message, AssistantMessage) and message.tool_calls:
            calls = "".join(
                TOOL_CALL_START
                + json.dumps({"name": c.function.name, "arguments": _arguments(c.function.arguments)})
                + TOOL_CALL_END
                for c in message.tool_calls
            )
            text = f"{text}\n{calls}" if text else calls
        role = "system" if message.role == "developer" else message.role
        if isinstance(message, ToolMessage):
            text = f"<tool_response>{text}</tool_response>"
        flat.append({"role": role, "content": text})
    if tool_prompt:
        if flat[0]["role"] == "system":
            flat[0] = {"role": "system", "content": f"{flat[0]['content']}\n\n{tool_prompt}"}
        else:
            flat.insert(0, {"role": "system", "content": tool_prompt})
    return flat


def _arguments(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
