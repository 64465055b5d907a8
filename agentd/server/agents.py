"""POST /v1/chat/completions for agent models, and GET /v1/runs: agents stream their steps.

Each step goes out as `delta.reasoning_content` (readable text) plus `delta.agent_step` (the
structured step, which standard clients ignore); the final answer goes in `delta.content`, piece
by piece as the model writes it (AnswerDelta steps), then whatever the run added to it (links).
Server-side tool calls are never sent as `tool_calls`. The thread id comes from the
`X-Agentd-Thread-Id` header or `metadata.thread_id`; it is returned in the same header, and as
`thread_id` (with `run_id`) on every chunk and on the completion.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.background import BackgroundTask

from agentd.agents.runtime import AgentRun
from agentd.agents.steps import AnswerDelta, ApprovalRequired, FinalAnswer, RunFailed, Step
from agentd.server.errors import APIError
from agentd.server.generation import RequestRecord, new_id, recorded, sse_response
from agentd.server.protocol import ChatCompletionRequest, ImagePart, TextPart
from agentd.server.transcript import content_text

THREAD_HEADER = "x-agentd-thread-id"


def agent_messages(body: ChatCompletionRequest, request: Request) -> list[dict[str, Any]]:
    """Client messages as agent transcript turns; pictures go to the file store and are named by
    id in the text, so the agent can pass them to a tool that takes an `Image`."""
    store = request.app.state.tools.context.file_store
    turns = []
    for index, message in enumerate(body.messages):
        if message.role == "tool" or (message.role == "assistant" and getattr(message, "tool_calls", None)):
            continue  # client-side tool traffic has no meaning for a server-side agent
        content = message.content
        if isinstance(content, list) and any(isinstance(part, ImagePart) for part in content):
            pieces = []
            for part in content:
                if isinstance(part, TextPart):
                    pieces.append(part.text)
                else:
                    stored = _store_image(store, str(part.image_url.get("url", "")), index)
                    pieces.append(f"[image {stored}]")
            text = " ".join(pieces)
        else:
            text = content_text(content, f"messages[{index}].content")
        role = "system" if message.role == "developer" else message.role
        turns.append({"role": role, "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise APIError(400, "an agent run needs the conversation to end with a user message", param="messages")
    return turns


# A picture this server already holds: a link to its file content (as agents' answers give them), or the id.
_OWN_FILE = re.compile(r"^(?:https?://[^/?#]+)?(?:/v1)?/files/(file-[A-Za-z0-9]+)/content$|^(file-[A-Za-z0-9]+)$")


def _store_image(store, url: str, index: int) -> str:
    """The file id of the picture a part sends: stored now (a data URL), or the stored one it links."""
    from tools.files import FileNotFound
    from tools.media import Image

    where = f"messages[{index}].content"
    own = _OWN_FILE.match(url.strip())
    if own and store is not None:
        file_id = own[1] or own[2]
        try:
            stored = store.get(file_id)
            Image(store.read(file_id), stored.mime_type, stored.filename)  # refuses what is not a picture
        except FileNotFound as error:
            raise APIError(400, f"image part: {error}", param=where) from None
        except ValueError as error:
            raise APIError(400, f"image part: {file_id} is not a picture ({error})", param=where) from None
        return file_id
    if url.startswith(("http://", "https://")):
        raise APIError(400, "image part: only data: URLs and links to this server's /v1/files/{id}/content are "
                            "accepted (this server fetches nothing from elsewhere)", param=where)
    try:
        image = Image.from_value(url)
    except ValueError as error:
        raise APIError(400, f"image part: {error}", param=where) from None
    return store.put(image.data, image.filename, "vision", image.mime_type).id if store else url


def _refuse_client_features(body: ChatCompletionRequest) -> None:
    if body.tools:
        raise APIError(400, f"{body.model} runs the server's tools itself; `tools` is for plain models", param="tools")
    if body.response_format is not None and body.response_format.type != "text":
        raise APIError(400, "agent models answer in text; `response_format` is for plain models",
                       param="response_format")
    if body.n != 1:
        raise APIError(400, "agent models give one answer per request (n=1)", param="n")
    # An agent's answer comes from several model calls and tools: no one token distribution to
    # report or bias. Refused rather than ignored; the defaults (what clients send unasked) pass.
    for param, value in (("logprobs", body.logprobs), ("top_logprobs", body.top_logprobs),
                         ("logit_bias", body.logit_bias), ("presence_penalty", body.presence_penalty),
                         ("frequency_penalty", body.frequency_penalty)):
        if value:
            raise APIError(400, f"agent models do not support `{param}`; it is for plain models", param=param)


def _tool_choice(body: ChatCompletionRequest, server_tools: list[str]) -> str | dict[str, str]:
    """An agent runs the server's tools, so a named `tool_choice` names one of those (its first
    call); "none" answers without tools, "required" makes the first step call one."""
    choice = body.tool_choice
    if choice is None or isinstance(choice, str):
        return choice or "auto"
    name = choice.function.name
    if name not in server_tools:
        listed = ", ".join(server_tools) or "none"
        raise APIError(400, f"tool_choice names `{name}`, which is not a server tool {body.model} can call "
                            f"(it can call: {listed})", param="tool_choice")
    return {"name": name}


async def start_agent_run(body: ChatCompletionRequest, request: Request, thread_id: str | None = None) -> AgentRun:
    """The run a chat request to an agent model asks for (chat completions and responses both start
    theirs here); `thread_id`, else the request's header or metadata, names the thread it continues."""
    _refuse_client_features(body)
    state = request.app.state
    thread_id = thread_id or request.headers.get(THREAD_HEADER) or (body.metadata or {}).get("thread_id")
    messages = agent_messages(body, request)
    tool_choice = _tool_choice(body, state.agents.tool_names(body.model))
    # Artifact links use the address the client reached, so a browser showing the answer can open them.
    base_url = f"{str(request.base_url).rstrip('/')}/v1"
    # Before any byte is sent: a model that is loading or failed is a 503 in the OpenAI shape.
    return await state.agents.start(body.model, messages, thread_id=thread_id, base_url=base_url,
                                    tool_choice=tool_choice)


async def create_agent_completion(body: ChatCompletionRequest, request: Request):
    run = await start_agent_run(body, request)
    record = RequestRecord(request.app.state.metrics, "chat", body.model)
    head = {"id": new_id("chatcmpl"), "created": int(time.time()), "model": body.model}
    if body.stream:
        response = sse_response(_chunks(run, head, record), record)
        response.headers[THREAD_HEADER] = run.thread_id
        # A client that leaves between two chunks leaves the run suspended rather than cancelled:
        # stop it when the response is over (a no-op for a run that ended).
        response.background = BackgroundTask(run.aclose)
        return response
    return await recorded(record, _completion(run, head))


async def _completion(run: AgentRun, head: dict[str, Any]) -> dict[str, Any]:
    async for _ in run:
        pass
    content = final_text(run.steps[-1]) if run.steps else ""
    message = {"role": "assistant", "content": content,
               "reasoning_content": "\n".join(s.text() for s in run.steps if not isinstance(s, FinalAnswer)),
               "agent_steps": [s.to_dict() for s in run.steps]}
    return {**head, "object": "chat.completion", "thread_id": run.thread_id, "run_id": run.id,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


async def _chunks(run: AgentRun, head: dict[str, Any], record: RequestRecord) -> AsyncIterator[dict[str, Any]]:
    base = {**head, "object": "chat.completion.chunk", "thread_id": run.thread_id, "run_id": run.id}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    streamed = ""  # the answer's text already sent as content
    async for step in run:
        if record.first_token is None:
            record.first_token = time.perf_counter()
        if isinstance(step, AnswerDelta):
            streamed += step.content
            yield chunk({"content": step.content})
        elif isinstance(step, FinalAnswer):
            yield chunk({"content": unsent(step.answer, streamed), "agent_step": step.to_dict()})
        else:
            yield chunk({"reasoning_content": step.text() + "\n", "agent_step": step.to_dict()})
            if isinstance(step, (ApprovalRequired, RunFailed)):
                yield chunk({"content": unsent(final_text(step), streamed)})
    yield chunk({}, "stop")


def unsent(text: str, streamed: str) -> str:
    """What of `text` the client has not been sent yet, after the answer pieces `streamed`."""
    if text.startswith(streamed):
        return text[len(streamed):]
    # Not a continuation (the run stopped mid-answer): it follows as a paragraph of its own.
    return f"\n\n{text}" if streamed else text


def final_text(step: Step) -> str:
    """What a run's last step says to the client as its answer."""
    if isinstance(step, FinalAnswer):
        return step.answer
    if isinstance(step, ApprovalRequired):
        listed = "; ".join(f"{c.name}({c.arguments})" for c in step.calls)
        return (f"Approval needed before running: {listed}. Reply \"approve\" or \"reject\" on thread "
                f"{step.thread_id} (header X-Agentd-Thread-Id or metadata.thread_id) to continue.")
    if isinstance(step, RunFailed):
        return f"The run stopped: {step.message}"
    return ""


def run_routes(router) -> None:
    @router.get("/runs/{run_id}")
    async def get_run(run_id: str, request: Request):
        found = request.app.state.agents.runs.get(run_id)
        if found is None:
            raise APIError(404, f"no run with id {run_id!r}", param="run_id", code="run_not_found")
        return found

    @router.get("/runs")
    async def list_runs(request: Request, thread_id: str | None = None, limit: int = 20):
        return {"object": "list", "data": request.app.state.agents.runs.list(thread_id, max(1, min(limit, 100)))}
