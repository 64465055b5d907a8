"""An engine backed by any OpenAI-compatible upstream (vLLM, LMDeploy, Ollama, a hosted API).

Chat requests go to the upstream's /chat/completions, raw prompts to /completions; a JSON
constraint becomes `response_format` (the upstream enforces it where it can). Tool-call
text comes back as text and is parsed by the same code as for local models.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from pipelines.engine import EngineError, EngineInfo, GenerationRequest, TextDelta, TextEngine


class OpenAIUpstreamEngine(TextEngine):
    def __init__(
        self,
        model_id: str,
        base_url: str,
        *,
        upstream_model: str | None = None,
        api_key: str | None = None,
        context_length: int = 8192,
        timeout: float = 600.0,
    ):
        self.info = EngineInfo(
            id=model_id, context_length=context_length, owned_by="upstream", meta={"url": base_url}
        )
        self._model = upstream_model or model_id
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self._active = 0

    async def validate(self, request: GenerationRequest) -> int | None:
        return None  # only the upstream knows its tokenizer; it answers 400 itself

    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        p = request.params
        body: dict[str, Any] = {
            "model": self._model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": p.temperature,
            "top_p": p.top_p,
        }
        if p.max_tokens is not None:
            body["max_tokens"] = p.max_tokens
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        c = request.constraint
        if c is not None and c.kind == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif c is not None and c.kind == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": c.schema or {}, "strict": True},
            }
        if request.messages is not None:
            body["messages"] = list(request.messages)
            return "/chat/completions", body
        body["prompt"] = request.prompt or ""
        return "/completions", body

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        path, body = self._body(request)
        finish: str | None = None
        usage: dict[str, int] = {}
        self._active += 1
        try:
            async with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread()).decode(errors="replace")
                    raise EngineError(
                        f"upstream answered {response.status_code}: {detail[:500]}",
                        status=response.status_code if response.status_code < 500 else 502,
                    )
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise EngineError(f"upstream error: {chunk['error']}", status=502)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices", []):
                        text = choice.get("text")
                        if text is None:
                            text = (choice.get("delta") or {}).get("content") or ""
                        finish = choice.get("finish_reason") or finish
                        if text:
                            yield TextDelta(text=text)
        except httpx.HTTPError as error:
            raise EngineError(f"upstream {self.info.meta['url']} failed: {error}", status=502) from error
        finally:
            self._active -= 1
        yield TextDelta(
            text="",
            finish_reason="length" if finish == "length" else "stop",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
        )

    @property
    def active_sequences(self) -> int:
        return self._active

    async def close(self) -> None:
        await self._client.aclose()
