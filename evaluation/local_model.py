"""Local weights as a model under test, through the embedded engine (`TransformersEngine`).

Log-likelihood requests are tokenised exactly as lm-evaluation-harness's hf backend does
(`_encode_pair`, the BOS/EOS prefix for an empty context, rolling windows for perplexity), so
that the same weights score the same here and there; the engine then scores the token pairs in
batches that share each context's forward pass. Generation goes through the engine's
continuous batching, `batch_size` requests at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from pipelines.engine import EngineError, GenerationRequest, SamplingParams

TokenPair = tuple[list[int], list[int]]


class LocalModel(EvalModel):
    """Wraps an engine; closes it only if it built it (`load`), never a server's shared engine."""

    def __init__(self, engine: Any, chat_template: bool | None = None, *, adapter: str | Path | None = None,
                 owns_engine: bool = False):
        """`chat_template` None: generation prompts go through the model's chat template when it has
        one (an instruct model given a bare prompt mostly answers with nothing); log-likelihood
        prompts stay plain text either way, as lm-evaluation-harness scores them."""
        if chat_template is None:
            chat_template = bool(getattr(getattr(engine, "tokenizer", None), "chat_template", None))
        self.engine = engine
        self._owns_engine = owns_engine
        folder = engine.info.meta.get("path")
        adapter = adapter if adapter is not None else engine.info.meta.get("adapter")
        dtype = str(getattr(getattr(engine, "model", None), "dtype", ""))
        fingerprint = weights_fingerprint(folder, adapter, dtype) if folder else f"engine:{engine.info.id}"
        if chat_template:
            # The same weights prompted through a chat template are another model under test:
            # their cached samples must not mix with the raw-prompt ones.
            fingerprint += "+chat"
        self.info = ModelInfo(
            id=engine.info.id, fingerprint=fingerprint, chat_template=chat_template,
            meta={"type": "local", "path": str(folder) if folder else None,
                  "adapter": str(adapter) if adapter else None, "dtype": dtype},
        )

    @classmethod
    def load(cls, model_id: str, folder: str | Path, adapter: str | Path | None = None, dtype: str = "auto",
             *, chat_template: bool | None = None) -> LocalModel:
        from pipelines.transformers_engine import TransformersEngine

        if not (Path(folder) / "config.json").is_file():
            raise EvaluationError(f"model {model_id}: {folder} is not a model folder (no config.json)",
                                  param="model")
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise EvaluationError(f"model {model_id}: {adapter} is not a LoRA adapter folder", param="model")
        try:
            engine = TransformersEngine(model_id, folder, dtype=dtype, adapter=adapter)
        except EngineError as error:
            raise EvaluationError(f"model {model_id}: {error.message}", param="model") from error
        except (OSError, ValueError) as error:
            raise EvaluationError(f"model {model_id}: cannot load {folder}: {error}", param="model") from error
        engine.info.meta["adapter"] = str(adapter) if adapter else None
        return cls(engine, chat_template, adapter=adapter, owns_engine=True)

    # -- tokenisation, as lm-evaluation-harness's hf backend does it ---------------------------

    @property
    def _tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def _prefix_token(self) -> int:
        """What an empty context (and the first rolling window) is conditioned on."""
        tokenizer = self._tokenizer
        return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # The harness's tok_encode: the tokenizer's own special-token default, except that a
        # text already starting with the prefix token's text gets no second one.
        prefix_text = self._tokenizer.decode([self._prefix_token])
        marked = [i for i, text in enumerate(texts) if prefix_text and text.startswith(prefix_text)]
        plain = sorted(set(range(len(texts))) - set(marked))
        out: list[list[int]] = [[] for _ in texts]
        for indexes, special in ((plain, {}), (marked, {"add_special_tokens": False})):
            if indexes:
                ids = self._tokenizer([texts[i] for i in indexes], **special)["input_ids"]
                for i, row in zip(indexes, ids, strict=True):
                    out[i] = list(row)
        return out

    def encode_pairs(self, requests: list[LoglikelihoodRequest]) -> list[TokenPair]:
        """(context ids, continuation ids) per request: trailing context whitespace moves to the
        continuation; the continuation is what encoding the whole adds after the context's own ids."""
        pairs: list[TokenPair | None] = [None] * len(requests)
        contexts, wholes, split = [], [], []
        empty = [i for i, r in enumerate(requests) if r.context == ""]
        if empty:
            conts = self._tokenizer([requests[i].continuation for i in empty], add_special_tokens=False)["input_ids"]
            for i, cont in zip(empty, conts, strict=True):
                cont = list(cont)
                if cont and cont[0] == self._prefix_token:
                    pairs[i] = (cont[:1], cont[1:])
                else:
                    pairs[i] = ([self._prefix_token], cont)
        for i, request in enumerate(requests):
            if request.context == "":
                continue
            context, continuation = request.context, request.continuation
            spaces = len(context) - len(context.rstrip())
            if spaces:
                context, continuation = context[:-spaces], context[-spaces:] + continuation
            contexts.append(context)
            wholes.append(context + continuation)
            split.append(i)
        if split:
            context_ids = self._encode(contexts)
            whole_ids = self._encode(wholes)
            for i, ctx, whole in zip(split, context_ids, whole_ids, strict=True):
                pairs[i] = (ctx, whole[len(ctx):])
        return pairs  # type: ignore[return-value]

    # -- the request types -----------------------------------------------------------------------

    async def check(self, needs_loglikelihood: bool) -> None:
        if needs_loglikelihood and not hasattr(self.engine, "loglikelihoods"):
            raise EvaluationError(
                f"model {self.info.id} is served by an engine without log-likelihoods; "
                "evaluate it on generation tasks only",
                param="model", code="no_prompt_logprobs",
            )

    async def _score(self, pairs: list[TokenPair], batch_size: int) -> list[tuple[float, bool]]:
        if not pairs:
            return []
        try:
            return await self.engine.loglikelihoods(pairs, batch_size=max(1, batch_size))
        except EngineError as error:
            raise EvaluationError(f"model {self.info.id}: {error.message}", param="model",
                                  code=error.code or "engine_error") from error

    async def loglikelihood(self, requests: list[LoglikelihoodRequest], batch_size: int = 8) -> list[Loglikelihood]:
        if not requests:
            return []
        pairs = await asyncio.to_thread(self.encode_pairs, requests)
        # An empty continuation is certain: nothing to score (the engine is never asked).
        todo = [i for i, (_, continuation) in enumerate(pairs) if continuation]
        scored = dict(zip(todo, await self._score([pairs[i] for i in todo], batch_size), strict=True))
        return [Loglikelihood(logprob=float(scored[i][0]), greedy=bool(scored[i][1])) if i in scored
                else Loglikelihood(logprob=0.0, greedy=True) for i in range(len(pairs))]

    async def loglikelihood_rolling(self, requests: list[RollingRequest], batch_size: int = 8) -> list[Rolling]:
        if not requests:
            return []
        token_lists = await asyncio.to_thread(self._encode, [r.text for r in requests])
        windows: list[TokenPair] = []
        owners: list[int] = []
        for owner, tokens in enumerate(token_lists):
            for window in rolling_windows(tokens, self._prefix_token, self.engine.info.context_length):
                windows.append(window)
                owners.append(owner)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, await self._score(windows, batch_size), strict=True):
            totals[owner] += float(logprob)
        return [Rolling(logprob=total, tokens=len(tokens)) for total, tokens in zip(totals, token_lists, strict=True)]

    async def generate(self, requests: list[GenerateRequest], batch_size: int = 8) -> list[str]:
        # The engine batches whatever runs at once: `batch_size` concurrent streams fill its batch.
        gate = asyncio.Semaphore(max(1, batch_size))

        async def one(request: GenerateRequest) -> str:
            async with gate:
                return await self._generate_one(request)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _generate_one(self, request: GenerateRequest) -> str:
        messages = request.messages
        if messages is None and self.info.chat_template:
            messages = ({"role": "user", "content": request.prompt or ""},)
        prompt = None if messages is not None else (request.prompt or "")
        max_tokens = request.max_tokens
        limit = self.engine.info.context_length
        if prompt is not None:
            prompt, max_tokens = await asyncio.to_thread(self._fit_prompt, prompt, max_tokens, limit)
        generation = GenerationRequest(
            params=SamplingParams(max_tokens=max_tokens, temperature=request.temperature,
                                  seed=request.seed, stop=tuple(request.until)),
            prompt=prompt, messages=tuple(messages) if messages is not None else None,
        )
        pieces: list[str] = []
        try:
            await self.engine.validate(generation)
            async for delta in self.engine.stream(generation):
                pieces.append(delta.text)
        except EngineError as error:
            raise EvaluationError(f"model {self.info.id}: {error.message}", param="model",
                                  code=error.code or "engine_error") from error
        return cut_at_stop("".join(pieces), request.until)

    def _fit_prompt(self, prompt: str, max_tokens: int, limit: int) -> tuple[str, int]:
        """Keep the prompt's rightmost tokens when prompt + max_tokens overflow the context, as
        the harness does (its left_truncate_len), rather than failing the run for one sample."""
        ids = self._tokenizer(prompt)["input_ids"]
        if max_tokens >= limit:  # no room left for any prompt: generate at most half the context
            max_tokens = max(1, limit // 2)
        room = limit - max_tokens
        if len(ids) <= room:
            return prompt, max_tokens
        return self._tokenizer.decode(ids[-room:]), max_tokens

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.close()


def cut_at_stop(text: str, until: tuple[str, ...] | list[str]) -> str:
    """The output up to its first stop string (the engine stops there; an endpoint may not)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def rolling_windows(tokens: list[int], prefix_token: int, max_length: int) -> Iterator[TokenPair]:
    """lm-evaluation-harness's `get_rolling_token_windows` (context_len=1) followed by
    `make_disjoint_window`: every token is scored exactly once, the first conditioned on the
    prefix token, each later window on as much of the text before it as fits."""
    if not tokens:
        return
    first = min(max_length, len(tokens))
    yield [prefix_token], tokens[:first]
    predicted = first
    while predicted < len(tokens):
        window = min(len(tokens) - predicted, max_length)
        end = predicted + window
        inputs = tokens[max(0, end - max_length - 1):end - 1]
        yield inputs[: len(inputs) - (window - 1)], tokens[end - window:end]
        predicted += window


def weights_fingerprint(folder: str | Path, adapter: str | Path | None = None, dtype: str = "") -> str:
    """What identifies local weights cheaply: the config's text and the weight files' names, sizes
    and modification times (hashing gigabytes would cost more than some evaluations), the
    tokenizer files that decide tokenisation, the adapter's likewise, and the dtype."""
    digest = hashlib.sha256()
    for part_folder, config_name in ((folder, "config.json"), (adapter, "adapter_config.json")):
        if part_folder is None:
            continue
        root = Path(part_folder)
        config = root / config_name
        digest.update(config_name.encode())
        digest.update(config.read_bytes() if config.is_file() else b"-")
        for path in sorted(root.glob("*")):
            if path.suffix in (".safetensors", ".bin", ".json", ".model") and path.name != config_name:
                stat = path.stat()
                digest.update(json.dumps([path.name, stat.st_size, stat.st_mtime_ns]).encode())
    digest.update(dtype.encode())
    return "sha256:" + digest.hexdigest()[:24]
