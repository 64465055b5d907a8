"""POST /v1/completions: raw prompts (texts or token ids), no chat template; `echo` and
`logprobs` in OpenAI's legacy shape, which lm-evaluation-harness's `local-completions` reads."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request

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
from agentd.server.protocol import CompletionRequest, Prompt
from pipelines.engine import GenerationRequest, SamplingParams, TextDelta, TokenLogprobs


async def create_completion(body: CompletionRequest, http: Request):
    state = http.app.state
    if body.max_tokens == 0 and not body.echo:
        raise APIError(400, "max_tokens: 0 is allowed only with `echo` (the prompt scored, nothing generated)",
                       param="max_tokens")
    params = sampling_params(body, body.max_tokens, logprobs=body.logprobs, echo=body.echo)
    # Choice index = prompt index * n + sample index, as OpenAI numbers them.
    requests = [r for p in body.prompts() for r in fan_out(_request(params, p), body.n)]
    # Held until the response ends (the stream keeps it): the model is not unloaded under it.
    lease = await state.registry.lease(body.model)
    engine = lease.engine
    await validate_all(engine, requests)
    record = RequestRecord(state.metrics, "completions", body.model)
    head = {"id": new_id("cmpl"), "created": int(time.time()), "model": body.model, "object": "text_completion"}
    choices = [_Choice(body.logprobs is not None) for _ in requests]
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(_chunks(lease, requests, choices, head, record, include_usage), record)
    return await recorded(record, _complete(lease, requests, choices, head, record))


def _request(params: SamplingParams, prompt: Prompt) -> GenerationRequest:
    if isinstance(prompt, str):
        return GenerationRequest(params=params, prompt=prompt)
    if not prompt:
        raise APIError(400, "prompt: a token-id prompt must have at least one token", param="prompt")
    return GenerationRequest(params=params, prompt_ids=tuple(prompt))


class _Choice:
    """One choice's text and its legacy logprobs: `tokens`, `token_logprobs`, `top_logprobs`
    (a {token: logprob} dict per token, null for the first prompt token) and `text_offset`
    (characters of the returned text before each token, the echoed prompt included)."""

    def __init__(self, with_logprobs: bool):
        self.with_logprobs = with_logprobs
        self.text = ""
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float] | None] = []
        self.text_offset: list[int] = []
        self._prompt_chars = 0
        self._generated = b""  # output bytes so far: offsets count whole characters only

    def add(self, delta: TextDelta) -> tuple[str, int]:
        """Take one engine delta; return the text it adds and where its tokens start."""
        start = len(self.tokens)
        text = delta.text
        if delta.echo is not None:
            text = delta.echo + text
            self._prompt_chars = len(delta.echo)
            for entry in delta.prompt_logprobs or ():
                self._append(entry, entry.offset or 0)
        for entry in delta.logprobs:
            offset = self._prompt_chars + len(self._generated.decode("utf-8", errors="ignore"))
            self._generated += entry.bytes
            self._append(entry, offset)
        self.text += text
        return text, start

    def _append(self, entry: TokenLogprobs, offset: int) -> None:
        self.tokens.append(entry.token)
        self.token_logprobs.append(entry.logprob)
        # Nothing predicts a prompt's first token: no logprob, no alternatives (OpenAI's nulls).
        self.top_logprobs.append(None if entry.logprob is None else {t.token: t.logprob for t in entry.top})
        self.text_offset.append(offset)

    def logprobs(self, start: int = 0) -> dict[str, Any] | None:
        if not self.with_logprobs:
            return None
        return {
            "tokens": self.tokens[start:],
            "token_logprobs": self.token_logprobs[start:],
            "top_logprobs": self.top_logprobs[start:],
            "text_offset": self.text_offset[start:],
        }


async def _complete(lease, requests, choices: list[_Choice], head, record) -> dict[str, Any]:
    reasons = [""] * len(requests)
    async for index, delta in merged_streams(lease.engine, requests):
        record.saw(delta)
        choices[index].add(delta)
        reasons[index] = delta.finish_reason or reasons[index]
    out = [
        {"index": i, "text": c.text, "logprobs": c.logprobs(), "finish_reason": reasons[i]}
        for i, c in enumerate(choices)
    ]
    return {**head, "choices": out, "usage": record.usage()}


async def _chunks(
    lease, requests, choices: list[_Choice], head, record, include_usage
) -> AsyncIterator[dict[str, Any]]:
    async for index, delta in merged_streams(lease.engine, requests):
        record.saw(delta)
        choice = choices[index]
        text, start = choice.add(delta)
        new_tokens = len(choice.tokens) > start
        if text or delta.finish_reason or new_tokens:
            logprobs = choice.logprobs(start)
            yield {**head, "choices": [
                {"index": index, "text": text, "logprobs": logprobs, "finish_reason": delta.finish_reason}]}
    if include_usage:
        yield {**head, "choices": [], "usage": record.usage()}
