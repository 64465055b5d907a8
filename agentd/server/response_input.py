"""The request body of OpenAI's Responses API, and its input items as chat messages.

A response runs through the same paths as a chat completion (plain models with client-side
tools and structured output, agents with their steps): its `instructions`, the items of the
response it continues (`previous_response_id`) and its own `input` become chat messages; its
`tools`, `tool_choice`, `text.format` and limits become the chat request's fields.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.server.errors import APIError
from agentd.server.protocol import ChatCompletionRequest


class ResponsesRequest(BaseModel):
    # Unknown fields (include, reasoning, truncation, prompt_cache_key, service_tier...) are accepted
    # and ignored: clients send them unasked, and none changes what this server can do.
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[dict[str, Any]] = Field(min_length=1, json_schema_extra={"minItems": 1})
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: bool = False
    store: bool = True
    background: bool = False
    metadata: dict[str, str] | None = None
    user: str | None = None
    conversation: str | dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None


def refuse_unsupported(body: ResponsesRequest) -> None:
    if body.background:
        raise APIError(400, "background responses are not supported: stream the response instead",
                       param="background")
    if body.conversation is not None:
        raise APIError(400, "conversations are not supported: continue with previous_response_id",
                       param="conversation")


def input_items(body: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as a list of items (a string is one user message)."""
    if isinstance(body.input, str):
        return [{"type": "message", "role": "user", "content": body.input}]
    return [dict(item) for item in body.input]


def chat_request(body: ResponsesRequest, items: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat completion that does the response's work (streamed, usage included).

    `items` are the conversation: the continued response's input and output, then this input.
    """
    messages = ([{"role": "system", "content": body.instructions}] if body.instructions else []) + to_messages(items)
    if not messages:
        raise APIError(400, "input: there is no message to answer", param="input")
    chat: dict[str, Any] = {"model": body.model, "messages": messages, "stream": True,
                            "stream_options": {"include_usage": True}}
    if body.max_output_tokens is not None:
        chat["max_completion_tokens"] = body.max_output_tokens
    for name in ("temperature", "top_p", "parallel_tool_calls", "metadata", "user"):
        if getattr(body, name) is not None:
            chat[name] = getattr(body, name)
    if body.tools:
        chat["tools"] = [_function_tool(tool, i) for i, tool in enumerate(body.tools)]
    if body.tool_choice is not None:
        chat["tool_choice"] = _tool_choice(body.tool_choice)
    fmt = (body.text or {}).get("format")
    if fmt is not None:
        chat["response_format"] = _response_format(fmt)
    try:
        return ChatCompletionRequest.model_validate(chat)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if not str(p)[:1].isupper())
        param = "input" if where.startswith("messages") else where.replace("response_format", "text.format")
        raise APIError(400, f"{param}: {first.get('msg')}", param=param, code="invalid_value") from None


def to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items as chat messages: function calls join the assistant message before them, their
    outputs become tool messages; reasoning and server-side tool items are the server's own
    record, not conversation, and are left out."""
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        kind = item.get("type") or ("message" if "role" in item else None)
        where = f"input[{index}]"
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise APIError(400, f"{where}.role: must be user, system, developer or assistant; got {role!r}",
                               param=f"{where}.role")
            messages.append({"role": role, "content": _content(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            call = {"id": _text(item, "call_id", where), "type": "function",
                    "function": {"name": _text(item, "name", where), "arguments": _text(item, "arguments", where)}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(output, str):
                output = json.dumps(output, ensure_ascii=False)
            messages.append({"role": "tool", "tool_call_id": _text(item, "call_id", where), "content": output})
        elif kind in ("reasoning", "mcp_call", "mcp_list_tools", "item_reference"):
            continue
        else:
            raise APIError(400, f"{where}.type: items of type {kind!r} are not supported (messages, function_call "
                                "and function_call_output are)", param=f"{where}.type")
    return messages


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where}: a string or a list of content parts", param=where)
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image":
            url = part.get("image_url") or part.get("file_id")
            if not url:
                raise APIError(400, f"{where}[{index}]: an input_image needs image_url or file_id",
                               param=f"{where}[{index}]")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        else:
            raise APIError(400, f"{where}[{index}].type: content parts of type {kind!r} are not supported "
                                "(input_text, input_image and output_text are)", param=f"{where}[{index}].type")
    return parts


def _text(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise APIError(400, f"{where}.{key}: required, a string", param=f"{where}.{key}")
    return value


def _function_tool(tool: dict[str, Any], index: int) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise APIError(400, f"tools[{index}].type: only function tools are supported here (this server runs no "
                            f"hosted {tool.get('type')!r} tool; its agent models call the server's own tools)",
                       param=f"tools[{index}].type")
    function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if tool.get(key) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> Any:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise APIError(400, "tool_choice: \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}",
                   param="tool_choice")


def _response_format(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt.get("type") == "json_schema":
        spec = {key: fmt[key] for key in ("name", "description", "schema", "strict") if key in fmt}
        return {"type": "json_schema", "json_schema": spec}
    return dict(fmt)
