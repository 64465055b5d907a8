"""An engine backed by any OpenAI-compatible upstream (vLLM, LMDeploy, Ollama, a hosted API).

Chat requests go to the upstream's /chat/completions, raw prompts to /completions, through
the official `openai` SDK; a JSON constraint becomes `response_format` (the upstream enforces
it where it can). Tool-call text comes back as text and is parsed by the same code as for
local models. Penalties, logit_bias and logprobs are passed on, and the upstream's logprobs
come back in our own shape; an echoed prompt with its logprobs is asked for in one unstreamed
call and split where the prompt ends. The engine's `client` is also what agents thinking with this model use, so one
connection pool (and one key) serves both, and closing the engine closes it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai

from pipelines.engine import (
    EngineError,
    EngineInfo,
    GenerationRequest,
    TextDelta,
    TextEngine,
    TokenLogprobs,
    TopLogprob,
)


# Statuses that describe the client's own request (bad parameters, too large, rate limited): passed
# on as they are. Any other answer is about our server (its key, its configured upstream model) or
# the upstream itself, and a client told "401" or "404" would blame its own key or model: 502.
CLIENT_STATUSES = frozenset({400, 413, 422, 429})


def upstream_error(error: openai.APIError, url: str) -> EngineError:
    """The upstream's verdict on the client's request stays the client's; anything else is a bad
    gateway (code `upstream_error`) whose message names the upstream."""
    if isinstance(error, openai.APIStatusError):
        body = error.body if isinstance(error.body, dict) else {}
        return status_error(error.status_code, body, error.message, error.param, url)
    if isinstance(error, openai.APIConnectionError):
        return EngineError(f"the upstream {url} is unreachable: {error.__cause__ or error.message}", status=502,
                           code="upstream_error")
    # An error event mid-stream.
    return EngineError(f"the upstream {url} failed: {error.message}", status=502, code="upstream_error")


def status_error(status: int, body: dict[str, Any], fallback: str, param: str | None, url: str) -> EngineError:
    """An upstream's error answer (its OpenAI error object's fields in `body`) as ours."""
    detail = body.get("message") or fallback
    if status in CLIENT_STATUSES:
        code = body.get("code") if isinstance(body.get("code"), str) else None
        return EngineError(f"the upstream {url} answered {status}: {detail}", status=status, param=param, code=code)
    if status in (401, 403):
        message = f"the upstream {url} refused our key ({status}): {detail}"
    elif status == 404:
        message = f"the upstream {url} answered 404 (is its configured model right?): {detail}"
    else:
        message = f"the upstream {url} answered {status}: {detail}"
    return EngineError(message, status=502, code="upstream_error")


class OpenAIUpstreamEngine(TextEngine):
    # Passed on: the upstream honours them or answers 400 itself.
    supported_extras = frozenset({"presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "echo"})

    def __init__(
        self,
        model_id: str,
        base_url: str,
        *,
        upstream_model: str | None = None,
        api_key: str | None = None,
        context_length: int = 8192,
        timeout: float = 600.0,
        relay: bool = False,
    ):
        self.info = EngineInfo(
            id=model_id, context_length=context_length, owned_by="upstream", meta={"url": base_url}
        )
        self.upstream_model = upstream_model or model_id
        # The SDK insists on a key; keyless servers (vLLM, Ollama) ignore the placeholder.
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout,
                                         max_retries=1)
        self._active = 0
        # Set for an upstream this server launched (a vLLM deployment): a plain request may then
        # go to it as it came and its answer come back as bytes (`relay_open`).
        self.relay = relay
        self._relay_http: httpx.AsyncClient | None = None
        self._api_key, self._timeout = api_key, timeout

    async def relay_open(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        """POST `payload` to the upstream's `path` and return its response with the body unread
        (the caller streams it and must `aclose` it); an error answer or no answer is an EngineError."""
        if self._relay_http is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._relay_http = httpx.AsyncClient(base_url=self.info.meta["url"], headers=headers,
                                                 timeout=httpx.Timeout(self._timeout, connect=10.0))
        url = self.info.meta["url"]
        try:
            response = await self._relay_http.send(self._relay_http.build_request("POST", path.lstrip("/"),
                                                                                  json=payload), stream=True)
        except httpx.HTTPError as error:
            raise EngineError(f"the upstream {url} is unreachable: {error}", status=502,
                              code="upstream_error") from error
        if response.status_code != 200:
            try:
                answer = json.loads(await response.aread())
            except (ValueError, httpx.HTTPError):
                answer = {}
            finally:
                await response.aclose()
            body = answer.get("error", answer) if isinstance(answer, dict) else {}
            body = body if isinstance(body, dict) else {}
            raise status_error(response.status_code, body, response.reason_phrase, body.get("param"), url)
        return response

    async def validate(self, request: GenerationRequest) -> int | None:
        self.check_extras(request.params)
        return None  # only the upstream knows its tokenizer; it answers 400 itself

    def _options(self, request: GenerationRequest) -> dict[str, Any]:
        p = request.params
        options: dict[str, Any] = {
            "model": self.upstream_model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        if p.max_tokens is not None:
            options["max_tokens"] = p.max_tokens
        if p.seed is not None:
            options["seed"] = p.seed
        if p.stop:
            options["stop"] = list(p.stop)
        if p.presence_penalty:
            options["presence_penalty"] = p.presence_penalty
        if p.frequency_penalty:
            options["frequency_penalty"] = p.frequency_penalty
        if p.logit_bias:
            options["logit_bias"] = {str(token): bias for token, bias in p.logit_bias}
        if p.logprobs is not None:
            if request.messages is not None:
                options.update(logprobs=True, top_logprobs=p.logprobs)
            else:
                options["logprobs"] = p.logprobs
        c = request.constraint
        if c is not None and c.kind == "json_object":
            options["response_format"] = {"type": "json_object"}
        elif c is not None and c.kind == "json_schema":
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": c.schema or {}, "strict": True},
            }
        return options

    def _prompt(self, request: GenerationRequest) -> str | list[int]:
        return list(request.prompt_ids) if request.prompt_ids is not None else request.prompt or ""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        if request.params.echo:
            if request.params.logprobs is None and request.prompt_ids is None:
                yield TextDelta(text="", echo=request.prompt or "")  # no need to ask the upstream
            else:
                async for delta in self._echoed(request):
                    yield delta
                return
        options = self._options(request)
        finish: str | None = None
        usage = None
        self._active += 1
        try:
            chat = request.messages is not None
            if chat:
                chunks = await self.client.chat.completions.create(messages=list(request.messages), **options)
            else:
                chunks = await self.client.completions.create(prompt=self._prompt(request), **options)
            async with chunks:
                async for chunk in chunks:
                    usage = chunk.usage or usage
                    for choice in chunk.choices:
                        text = choice.delta.content if chat else choice.text
                        finish = choice.finish_reason or finish
                        logprobs = _chat_logprobs(choice.logprobs) if chat else _legacy_logprobs(choice.logprobs)
                        if text or logprobs:
                            yield TextDelta(text=text or "", logprobs=logprobs)
        except openai.APIError as error:
            raise upstream_error(error, self.info.meta["url"]) from error
        finally:
            self._active -= 1
        yield TextDelta(
            text="",
            finish_reason="length" if finish == "length" else "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    async def _echoed(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        """One unstreamed call with `echo`: its text and tokens are split where the prompt ends
        (after as many tokens as a token-id prompt has, or at a text prompt's length)."""
        options = {**self._options(request), "stream": False, "echo": True}
        options.pop("stream_options")
        options["logprobs"] = request.params.logprobs or 0  # the tokens tell where the prompt ends
        self._active += 1
        try:
            reply = await self.client.completions.create(prompt=self._prompt(request), **options)
        except openai.APIError as error:
            raise upstream_error(error, self.info.meta["url"]) from error
        finally:
            self._active -= 1
        choice = reply.choices[0]
        tokens = _legacy_logprobs(choice.logprobs, with_offsets=True)
        if not tokens:
            raise EngineError(f"the upstream {self.info.meta['url']} returned no prompt logprobs for `echo`",
                              param="echo")
        if request.prompt_ids is not None:
            cut = len(request.prompt_ids)
            end = tokens[cut].offset if cut < len(tokens) else len(choice.text)
        else:
            end = len(request.prompt or "")
            cut = sum(1 for t in tokens if (t.offset or 0) < end)
        asked = request.params.logprobs is not None
        yield TextDelta(text="", echo=choice.text[:end], prompt_logprobs=tokens[:cut] if asked else None)
        usage = reply.usage
        yield TextDelta(
            text=choice.text[end:],
            logprobs=tuple(TokenLogprobs(t.token, t.bytes, t.logprob, t.top) for t in tokens[cut:]) if asked else (),
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    @property
    def active_sequences(self) -> int:
        return self._active

    async def close(self) -> None:
        await self.client.close()
        if self._relay_http is not None:
            await self._relay_http.aclose()


def _chat_logprobs(logprobs: Any) -> tuple[TokenLogprobs, ...]:
    """A chat chunk's `logprobs.content` in our shape."""
    content = getattr(logprobs, "content", None) or []
    return tuple(
        TokenLogprobs(
            item.token, bytes(item.bytes or item.token.encode()), item.logprob,
            tuple(TopLogprob(t.token, bytes(t.bytes or t.token.encode()), t.logprob) for t in item.top_logprobs or []),
        )
        for item in content
    )


def _legacy_logprobs(logprobs: Any, with_offsets: bool = False) -> tuple[TokenLogprobs, ...]:
    """A legacy completion's `{tokens, token_logprobs, top_logprobs, text_offset}` in our shape."""
    tokens = getattr(logprobs, "tokens", None) or []
    values = getattr(logprobs, "token_logprobs", None) or [None] * len(tokens)
    tops = getattr(logprobs, "top_logprobs", None) or [None] * len(tokens)
    offsets = getattr(logprobs, "text_offset", None) or [None] * len(tokens)
    return tuple(
        TokenLogprobs(
            token, token.encode(), value,
            tuple(TopLogprob(t, t.encode(), lp) for t, lp in (top or {}).items()),
            offset if with_offsets else None,
        )
        for token, value, top, offset in zip(tokens, values, tops, offsets, strict=False)
    )
