"""Any OpenAI-compatible endpoint as a model under test, on the official `openai` SDK.

Log-likelihoods come from the legacy completions API with `echo=True, logprobs=1, max_tokens=1`:
the server scores the whole prompt (context + continuation) and we sum the log-probabilities of
the tokens whose `text_offset` falls in the continuation, as lm-evaluation-harness's
`local-completions` model does. An endpoint that gives no prompt log-probabilities is refused by
`check()` before a run starts: without them every choice would score the same and the run would
report chance-level accuracy without saying why.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import openai

from evaluation.local_model import cut_at_stop
from evaluation.requests import (
    EvalModel,
    EvaluationError,
    GenerateRequest,
    Loglikelihood,
    LoglikelihoodRequest,
    ModelInfo,
    Rolling,
    RollingRequest,
)

# OpenAI's completions and chat APIs take at most four stop sequences; the rest are cut after.
_MAX_STOPS = 4


class EndpointModel(EvalModel):
    def __init__(self, base_url: str, model: str, api_key: str | None = None, chat: bool = False, *,
                 model_id: str | None = None, timeout: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.chat = chat
        self.client = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key or "unused",
                                         timeout=timeout, max_retries=2)
        digest = hashlib.sha256(f"{self.base_url}\n{model}".encode()).hexdigest()[:24]
        self.info = ModelInfo(
            id=model_id or model,
            fingerprint=f"endpoint:{digest}" + ("+chat" if chat else ""),
            chat_template=chat,
            meta={"type": "endpoint", "base_url": self.base_url, "model": model},
        )

    def _error(self, error: Exception) -> EvaluationError:
        if isinstance(error, openai.APIConnectionError):
            return EvaluationError(f"{self.base_url}: cannot reach the endpoint ({error})", param="model",
                                   code="endpoint_unreachable")
        if isinstance(error, openai.APIStatusError):
            return EvaluationError(
                f"{self.base_url} model {self.model} answered {error.status_code}: {error.message}",
                param="model", code="endpoint_error",
            )
        return EvaluationError(f"{self.base_url} model {self.model}: {error}", param="model", code="endpoint_error")

    def _no_logprobs(self, detail: str) -> EvaluationError:
        return EvaluationError(
            f"{self.base_url} model {self.model} returns no prompt log-probabilities (echo+logprobs): "
            f"{detail}; evaluate it on generation tasks only, or serve it where prompt logprobs are available",
            param="model", code="no_prompt_logprobs",
        )

    async def _echo(self, prompts: list[str]) -> list[Any]:
        """The prompt's token log-probabilities, one `Logprobs` per prompt, in order."""
        try:
            reply = await self.client.completions.create(
                model=self.model, prompt=prompts, echo=True, logprobs=1, max_tokens=1, temperature=0,
            )
        except openai.BadRequestError as error:
            # A server that refuses echo/logprobs says so with a 400 naming them; say what it
            # means for a run. Any other 400 (a prompt too long) is reported as it is.
            if any(word in str(error.message).lower() for word in ("logprob", "echo")):
                raise self._no_logprobs(f"it refused echo+logprobs ({error.message})") from error
            raise self._error(error) from error
        except openai.OpenAIError as error:
            raise self._error(error) from error
        choices = sorted(reply.choices, key=lambda c: c.index)
        if len(choices) != len(prompts):
            raise self._error(RuntimeError(f"{len(choices)} choices for {len(prompts)} prompts"))
        out = []
        for choice in choices:
            logprobs = choice.logprobs
            if logprobs is None or not logprobs.token_logprobs or logprobs.text_offset is None:
                raise self._no_logprobs("its completions carry no token_logprobs/text_offset")
            out.append(logprobs)
        return out

    async def check(self, needs_loglikelihood: bool) -> None:
        if not needs_loglikelihood:
            return
        (probe,) = await self._echo(["The capital of France is Paris."])
        if all(lp is None for lp in probe.token_logprobs[:-1]):
            raise self._no_logprobs("every prompt token's log-probability is null")

    async def _batched(self, prompts: list[str], batch_size: int) -> list[Any]:
        chunks = [prompts[i:i + max(1, batch_size)] for i in range(0, len(prompts), max(1, batch_size))]
        # A few requests in flight keep a batching server busy without flooding it.
        gate = asyncio.Semaphore(4)

        async def one(chunk: list[str]) -> list[Any]:
            async with gate:
                return await self._echo(chunk)

        return [lp for chunk in await asyncio.gather(*(one(c) for c in chunks)) for lp in chunk]

    async def loglikelihood(self, requests: list[LoglikelihoodRequest], batch_size: int = 8) -> list[Loglikelihood]:
        prompts = [r.context + r.continuation for r in requests]
        answers = []
        for request, prompt, logprobs in zip(requests, prompts, await self._batched(prompts, batch_size),
                                             strict=True):
            # As the harness's hf backend: whitespace ending the context belongs to the continuation
            # (" Paris" is one token), so the boundary is where the context's text ends without it.
            start = len(request.context.rstrip())
            total, greedy = 0.0, True
            for token_lp, top, offset in _tokens_between(logprobs, start, len(prompt)):
                if token_lp is None:  # the very first prompt token: nothing predicts it
                    continue
                total += token_lp
                if top and token_lp < max(top.values()):
                    greedy = False
            answers.append(Loglikelihood(logprob=total, greedy=greedy))
        return answers

    async def loglikelihood_rolling(self, requests: list[RollingRequest], batch_size: int = 8) -> list[Rolling]:
        # One echo of the whole text: every token but the first (which nothing predicts) is scored.
        prompts = [r.text for r in requests]
        answers = []
        for prompt, logprobs in zip(prompts, await self._batched(prompts, batch_size), strict=True):
            scored = [lp for lp, _, _ in _tokens_between(logprobs, 0, len(prompt)) if lp is not None]
            answers.append(Rolling(logprob=float(sum(scored)), tokens=len(scored)))
        return answers

    async def generate(self, requests: list[GenerateRequest], batch_size: int = 8) -> list[str]:
        gate = asyncio.Semaphore(max(1, batch_size))

        async def one(request: GenerateRequest) -> str:
            async with gate:
                return cut_at_stop(await self._generate_one(request), request.until)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _generate_one(self, request: GenerateRequest) -> str:
        stop = [s for s in request.until if s][:_MAX_STOPS] or None
        common: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens,
                                  "temperature": request.temperature, "stop": stop}
        if request.seed is not None:
            common["seed"] = request.seed
        try:
            if self.chat or request.messages is not None:
                messages = list(request.messages or ({"role": "user", "content": request.prompt or ""},))
                reply = await self.client.chat.completions.create(messages=messages, **common)
                return reply.choices[0].message.content or ""
            reply = await self.client.completions.create(prompt=request.prompt or "", **common)
            return reply.choices[0].text or ""
        except openai.OpenAIError as error:
            raise self._error(error) from error

    async def close(self) -> None:
        await self.client.close()


def _tokens_between(logprobs: Any, start: int, end: int) -> list[tuple[float | None, dict[str, float], int]]:
    """(logprob, top alternatives, offset) of the tokens whose text starts in [start, end): the
    echoed prompt's part we score, without the one generated token that follows it."""
    tops = logprobs.top_logprobs or [None] * len(logprobs.token_logprobs)
    return [
        (lp, top or {}, offset)
        for lp, top, offset in zip(logprobs.token_logprobs, tops, logprobs.text_offset, strict=False)
        if start <= offset < end
    ]
