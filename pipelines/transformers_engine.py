"""The CPU default engine: transformers with continuous batching.

One worker thread owns the model. Sequences join the running batch at any step (their prompt
is prefilled, then their KV cache is left-padded and concatenated to the batch's) and leave
it the step they finish or are cancelled, so a new request waits for one prefill, never for
another request to end. Left padding keeps every row's newest token in the last column, so a
decode step is one forward pass for the whole batch.

A failure stays with the request that caused it: sampling, grammar and detokenising errors
fail only their row; a failed prefill of joining rows leaves the running batch alone and is
retried row by row to find the culprit; a failed batch step is retried by prefilling the
survivors again from their prompt and the tokens they have so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipelines.decoding import (
    GrammarCompiler,
    TextAccumulator,
    TokenSpeller,
    adjust_logits,
    sample_next_token,
    token_logprobs,
)
from pipelines.engine import (
    EngineError,
    EngineInfo,
    GenerationRequest,
    TextDelta,
    TextEngine,
    TokenLogprobs,
    TopLogprob,
)
from pipelines.prompt_tokens import PromptTokens, stop_token_ids
from pipelines.sequences import QueuedSequence, outbox_deltas
from pipelines.scoring import Scorer, TokenLogprob

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Sequence(QueuedSequence):
    generator: torch.Generator | None = None
    matcher: Any = None
    bias: tuple[torch.Tensor, torch.Tensor] | None = None  # logit_bias as (token ids, values)
    unsent_logprobs: list[TokenLogprobs] = field(default_factory=list)  # until the next delta goes

    def send(self, item: TextDelta | Exception) -> None:
        if isinstance(item, TextDelta) and self.unsent_logprobs:
            item.logprobs = tuple(self.unsent_logprobs)
            self.unsent_logprobs = []
        super().send(item)

    def fail(self, error: Exception) -> None:
        log.error("generation failed for one request", exc_info=error)
        self.finished = True
        self.send(EngineError(f"generation failed: {error}", status=500))

    def unloaded(self, error: EngineError) -> None:
        self.finished = True
        self.send(error)


@dataclass
class _Batch:
    sequences: list[_Sequence]
    cache: Any
    attention_mask: torch.Tensor  # [rows, cached columns]; 0 marks left padding
    last_tokens: torch.Tensor = field(default_factory=lambda: torch.empty(0, 1, dtype=torch.long))


class TransformersEngine(TextEngine):
    def __init__(
        self,
        model_id: str,
        folder: str | Path,
        *,
        dtype: str = "auto",
        max_batch_size: int = 32,
        adapter: str | Path | None = None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=_resolve_dtype(dtype))
        if adapter is not None:
            from peft import PeftModel

            # Merged once at load: the adapter then costs nothing per token.
            self.model = PeftModel.from_pretrained(self.model, adapter).merge_and_unload()
        self.model.eval()
        config = self.model.config
        context = getattr(config, "max_position_embeddings", None) or 2048
        self.info = EngineInfo(id=model_id, context_length=int(context), meta={"path": str(folder)})
        self._eos_ids = stop_token_ids(self.tokenizer, folder)
        self._grammars = GrammarCompiler(self.tokenizer, config.vocab_size, sorted(self._eos_ids))
        self._pad_id = self.tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = min(self._eos_ids)
        self._max_batch = max_batch_size
        self._vocab_size = int(config.vocab_size)
        self._prompts = PromptTokens(self.tokenizer, model_id, self.info.context_length, self._vocab_size)
        self._speller = TokenSpeller(self.tokenizer)
        self._scorer = Scorer(
            self.model, self.tokenizer, context_length=self.info.context_length, pad_id=self._pad_id
        )
        self._pending: queue.SimpleQueue[_Sequence | None] = queue.SimpleQueue()
        self._active = 0
        self._closing = False
        self._closing_lock = threading.Lock()  # no sequence joins `_pending` once closing is set
        self._worker = threading.Thread(target=self._run, name=f"engine-{model_id}", daemon=True)
        self._worker.start()

    # -- the async side -------------------------------------------------------------------

    supported_extras = frozenset({"presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "echo"})

    async def validate(self, request: GenerationRequest) -> int:
        self.check_extras(request.params)
        ids = self._prompts.checked_ids(request)
        bad = [i for i, _ in request.params.logit_bias if not 0 <= i < self._vocab_size]
        if bad:
            raise EngineError(f"logit_bias: token id {bad[0]} is not in this model's vocabulary "
                              f"(0..{self._vocab_size - 1})", param="logit_bias")
        prompt_tokens = len(ids)
        self._prompts.budget(request, prompt_tokens)
        if request.constraint is not None:
            await asyncio.to_thread(self._grammars.compile, request.constraint)  # cached for stream
        return prompt_tokens

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        prompt_ids = self._prompts.ids(request)
        params = request.params
        generator = None
        if params.seed is not None and params.temperature > 0:
            generator = torch.Generator().manual_seed(params.seed)
        matcher = None
        if request.constraint is not None:
            compiled = await asyncio.to_thread(self._grammars.compile, request.constraint)
            matcher = self._grammars.matcher(compiled)
        max_tokens = self._prompts.budget(request, len(prompt_ids))
        if params.echo:
            yield await self._echo(request, prompt_ids)
        if max_tokens == 0:  # echo only: scoring a prompt, as lm-evaluation-harness does
            yield TextDelta(text="", finish_reason="length", prompt_tokens=len(prompt_ids))
            return
        bias = None
        if params.logit_bias:
            ids, values = zip(*params.logit_bias, strict=True)
            bias = (torch.tensor(ids, dtype=torch.long), torch.tensor(values, dtype=torch.float32))
        seq = _Sequence(
            request=request,
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            accumulator=TextAccumulator(self.tokenizer, params.stop),
            loop=asyncio.get_running_loop(),
            outbox=asyncio.Queue(),
            generator=generator,
            matcher=matcher,
            bias=bias,
        )
        with self._closing_lock:
            if self._closing:
                raise self._unloaded()
            self._pending.put(seq)
        async with contextlib.aclosing(outbox_deltas(seq)) as deltas:  # closed with this stream, at once
            async for delta in deltas:
                yield delta

    async def _echo(self, request: GenerationRequest, ids: list[int]) -> TextDelta:
        """The prompt as text and, with logprobs asked, as scored tokens whose `offset`s index
        that text (the tokenizer's own offsets for a text prompt; decoded prefixes for ids)."""
        text = (request.prompt or "") if request.prompt_ids is None else self.tokenizer.decode(ids)
        k = request.params.logprobs
        if k is None:
            return TextDelta(text="", echo=text)
        if request.prompt_ids is None:
            offsets = [start for start, _ in self.tokenizer(text, return_offsets_mapping=True).offset_mapping]
        else:
            offsets, seen = [], b""
            for token in ids:
                offsets.append(len(seen.decode("utf-8", errors="ignore")))
                seen += self._speller.bytes_of(token)
        scored = await self.prompt_logprobs(ids, k)
        entries = tuple(
            TokenLogprobs(*self._speller(s.token), s.logprob,
                          tuple(TopLogprob(*self._speller(t), lp) for t, lp in s.top), offset)
            for s, offset in zip(scored, offsets, strict=True)
        )
        return TextDelta(text="", echo=text, prompt_logprobs=entries)

    @property
    def active_sequences(self) -> int:
        return self._active

    async def close(self) -> None:
        """Stop the worker; every sequence still running or waiting fails with a 503 (retry)."""
        with self._closing_lock:
            self._closing = True
            self._pending.put(None)
        await asyncio.to_thread(self._worker.join, 30)

    def _unloaded(self) -> EngineError:
        return EngineError(f"the model {self.info.id} was unloaded; retry", status=503, param="model")

    # -- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        batch: _Batch | None = None
        with torch.inference_mode():
            while not self._closing:
                joining = self._take_pending(block=batch is None)
                try:
                    if joining:
                        batch = self._merge(batch, self._start(joining))
                    elif batch is not None:
                        self._decode(batch)
                    batch = self._without_finished(batch)
                except Exception:  # noqa: BLE001 - the cache may be half-updated: rebuild it
                    log.exception("generation step failed; prefilling its sequences again")
                    rows = (batch.sequences if batch else []) + joining
                    live = [s for s in dict.fromkeys(rows) if not s.done]
                    batch = self._without_finished(self._start(live)) if live else None
                self._active = len(batch.sequences) if batch else 0
            # Closing: whatever is still running or waiting ends now, or its stream would wait forever.
            left = list(batch.sequences) if batch else []
            with contextlib.suppress(queue.Empty):
                while True:
                    left.append(self._pending.get_nowait())
            for seq in left:
                if seq is not None and not seq.done:
                    seq.unloaded(self._unloaded())
            self._active = 0

    def _start(self, sequences: list[_Sequence]) -> _Batch | None:
        """Prefill sequences as one batch or, when that fails, one at a time, so that only a
        sequence that fails on its own is failed. Never raises."""
        try:
            return self._prefill(sequences)
        except Exception as error:  # noqa: BLE001 - narrowed down below
            if len(sequences) == 1:
                sequences[0].fail(error)
                return None
            log.warning("prefill of %d sequences failed (%s); retrying one at a time", len(sequences), error)
        batch = None
        for seq in sequences:
            batch = self._merge(batch, self._start([seq]))
        return batch

    def _take_pending(self, block: bool) -> list[_Sequence]:
        taken: list[_Sequence] = []
        room = self._max_batch - self._active
        while len(taken) < max(room, 0):
            try:
                seq = self._pending.get(block=block and not taken)
            except queue.Empty:
                break
            if seq is None:
                break
            if not seq.cancelled:
                taken.append(seq)
        return taken

    def _prefill(self, sequences: list[_Sequence]) -> _Batch:
        from transformers import DynamicCache

        # A sequence prefilled again after a failed step replays what it generated so far.
        contexts = [s.prompt_ids + s.generated for s in sequences]
        width = max(len(ids) for ids in contexts)
        input_ids = torch.full((len(sequences), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(contexts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        cache = DynamicCache(config=self.model.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        batch = _Batch(sequences=sequences, cache=out.past_key_values, attention_mask=mask)
        self._advance(batch, out.logits[:, -1, :])
        return batch

    def _decode(self, batch: _Batch) -> None:
        mask = torch.cat([batch.attention_mask, torch.ones_like(batch.last_tokens)], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1
        out = self.model(
            input_ids=batch.last_tokens,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=batch.cache,
            use_cache=True,
        )
        batch.attention_mask = mask
        self._advance(batch, out.logits[:, -1, :])

    def _advance(self, batch: _Batch, logits: torch.Tensor) -> None:
        """Pick each row's next token and deliver what it adds to the text. A row whose grammar,
        sampling or detokenising fails is failed alone; the batch goes on."""
        logits = logits.float()
        seqs = batch.sequences
        for row, seq in enumerate(seqs):
            if not seq.done:
                adjust_logits(logits[row], seq.request.params, seq.generated, seq.bias)
        constrained = []
        if any(s.matcher is not None for s in seqs):
            bitmask = self._grammars.allocate_bitmask(len(seqs))
            for row, seq in enumerate(seqs):
                if seq.matcher is not None and not seq.done:
                    try:
                        seq.matcher.fill_next_token_bitmask(bitmask, row)
                        constrained.append(row)
                    except Exception as error:  # noqa: BLE001 - this row's failure only
                        seq.fail(error)
            if constrained:
                self._grammars.apply_bitmask(logits, bitmask, constrained)
        tokens = [self._pad_id] * len(seqs)  # a row that is done feeds padding until it leaves
        for row, seq in enumerate(seqs):
            if seq.done:
                continue
            params = seq.request.params
            try:
                tokens[row] = sample_next_token(logits[row], params.temperature, params.top_p, seq.generator)
                if params.logprobs is not None:
                    # Reported from the distribution after penalties, logit_bias and the grammar
                    # but before temperature and top_p (vLLM's "processed" logprobs less those):
                    # the same text gets the same logprobs at any temperature, and a banned
                    # token shows as impossible.
                    seq.unsent_logprobs.append(token_logprobs(
                        torch.log_softmax(logits[row], dim=-1), tokens[row], params.logprobs, self._speller))
                self._accept(seq, tokens[row])
            except Exception as error:  # noqa: BLE001 - this row's failure only
                seq.fail(error)
        batch.last_tokens = torch.tensor(tokens, dtype=torch.long).unsqueeze(1)

    def _accept(self, seq: _Sequence, token: int) -> None:
        if seq.matcher is not None and not seq.matcher.accept_token(token):
            raise RuntimeError(f"the grammar refused token {token}")
        seq.completion_tokens += 1
        if token in self._eos_ids:
            seq.finish("stop", seq.accumulator.flush())
            return
        seq.generated.append(token)
        text, hit_stop = seq.accumulator.push(token)
        if hit_stop or (seq.matcher is not None and seq.matcher.is_terminated()):
            seq.finish("stop", text + ("" if hit_stop else seq.accumulator.flush()))
        elif seq.completion_tokens >= seq.max_tokens:
            seq.finish("length", text + seq.accumulator.flush())
        elif text:
            seq.send(TextDelta(text=text))

    def _merge(self, running: _Batch | None, joining: _Batch | None) -> _Batch | None:
        if running is None or joining is None:
            return running or joining
        width = max(running.attention_mask.shape[1], joining.attention_mask.shape[1])
        for mine, theirs in zip(running.cache.layers, joining.cache.layers, strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat(
                [_left_pad(mine.values, width), _left_pad(theirs.values, width)]
            )
        running.attention_mask = torch.cat(
            [_left_pad(running.attention_mask, width), _left_pad(joining.attention_mask, width)]
        )
        running.last_tokens = torch.cat([running.last_tokens, joining.last_tokens])
        running.sequences = running.sequences + joining.sequences
        return running

    def _without_finished(self, batch: _Batch | None) -> _Batch | None:
        if batch is None:
            return None
        keep = [i for i, s in enumerate(batch.sequences) if not s.done]
        if not keep:
            return None
        if len(keep) < len(batch.sequences):
            index = torch.tensor(keep)
            mask = batch.attention_mask[index]
            # Columns that are padding in every remaining row are dead weight: drop them.
            first = int((mask.sum(0) > 0).nonzero()[0])
            for layer in batch.cache.layers:
                layer.keys = layer.keys[index, :, first:]
                layer.values = layer.values[index, :, first:]
            batch.attention_mask = mask[:, first:]
            batch.last_tokens = batch.last_tokens[index]
            batch.sequences = [batch.sequences[i] for i in keep]
        return batch

    # -- scoring given text (evaluation, echoed prompts) -------------------------------------

    async def loglikelihoods(
        self, pairs: list[tuple[list[int], list[int]]], batch_size: int = 8
    ) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (summed continuation logprob, greedy?), in order;
        see `Scorer.loglikelihoods`. Runs in a thread beside the worker's generation (both only
        read the model); scoring calls queue on the scorer's own lock."""
        if self._closing:
            raise self._unloaded()
        return await asyncio.to_thread(self._scorer.loglikelihoods, pairs, batch_size)

    async def prompt_logprobs(self, ids: list[int], top_k: int = 0) -> list[TokenLogprob]:
        """Each id's logprob given the ids before it (None for the first) and the top_k
        alternatives at its position, best first."""
        if self._closing:
            raise self._unloaded()
        return await asyncio.to_thread(self._scorer.token_logprobs, ids, top_k)


def _resolve_dtype(name: str) -> torch.dtype:
    """`auto`: bfloat16 on a GPU; float32 on a CPU, where bfloat16 matmuls without hardware
    support made batched decoding 2x and prefill 5x slower here (only one stream gained)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise EngineError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16")
    return dtype


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Pad the sequence axis (the last for masks, the third for [b, heads, seq, dim]) on the left."""
    axis = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.shape[axis]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
