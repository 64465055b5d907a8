"""Log-likelihoods of given text under a causal LM: what evaluation and `/v1/completions` echo need.

A multiple-choice question asks for the likelihood of each choice after the same context, so
the context is what costs: lm-evaluation-harness's hf backend forwards context + continuation
once per choice. Here each distinct context is forwarded once (several of them left-padded into
one batch) and its KV cache is then shared by the continuations of every context of that batch,
which go through the model together, right-padded, on rows of the cache picked per continuation.

Results must not depend on how pairs are batched: padding is masked and every row gets explicit
position ids (`cumsum(mask) - 1`), so a row sees exactly the positions it would see alone.
Forwards go in time segments of a bounded number of tokens, so neither a long context nor a
long continuation (a rolling-perplexity window) builds a [rows, tokens, vocab] logits tensor that
does not fit.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pipelines.engine import EngineError

# Tokens per forward segment: bounds the logits ([tokens, vocab] floats: 400 MB at 2048 tokens
# and a 49k vocabulary) and the activations, whatever the batch or the sequence lengths.
TOKEN_BUDGET = 2048


@dataclass(frozen=True)
class TokenLogprob:
    token: int  # token id
    logprob: float | None  # None for the first prompt token (nothing predicts it)
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), best first, top_k of them


@dataclass
class _Pair:
    index: int  # where its answer goes in the caller's list
    context: tuple[int, ...]
    continuation: list[int]


class Scorer:
    """Batched log-likelihood scoring with one model. Calls are serialised by a lock of its own,
    so it may run in a thread while another thread generates with the same (read-only) model."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        context_length: int | None = None,
        pad_id: int | None = None,
        token_budget: int = TOKEN_BUDGET,
    ):
        self.model = model
        config = model.config
        self.context_length = int(
            context_length or getattr(config, "max_position_embeddings", None) or 2048
        )
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        if pad_id is None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad_id or 0)  # any id does: padding is masked out
        self.token_budget = token_budget
        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, then goes).
        parameters = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in parameters else "past_key_values"
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- public --------------------------------------------------------------------------

    def loglikelihoods(
        self, pairs: list[tuple[list[int], list[int]]], batch_size: int = 8
    ) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (summed log-probability of the continuation, whether
        greedy decoding would produce it), in the input order.

        An empty context leaves the first continuation token unscored (nothing predicts it; put
        a BOS/EOT token in front to score it). A context too long for the model keeps its
        rightmost tokens, as lm-evaluation-harness does. `batch_size` bounds the rows of every
        forward pass; the answers do not depend on it.
        """
        if batch_size < 1:
            raise EngineError("batch_size must be at least 1", param="batch_size")
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        groups: dict[tuple[int, ...], list[_Pair]] = {}
        for index, (context, continuation) in enumerate(pairs):
            pair = self._prepare(index, list(context), list(continuation))
            if pair is None:
                results[index] = (0.0, True)  # nothing to score
            else:
                groups.setdefault(pair.context, []).append(pair)
        with self._lock, torch.inference_mode():
            # Longest contexts first (as the harness): a batch that does not fit fails at once,
            # and neighbours have similar lengths, so little padding is wasted.
            contexts = sorted(groups, key=lambda ids: (-len(ids), ids))
            for start in range(0, len(contexts), batch_size):
                chunk = contexts[start : start + batch_size]
                for index, answer in self._score_contexts(chunk, [groups[c] for c in chunk], batch_size):
                    results[index] = answer
        return results  # type: ignore[return-value]  # every slot is filled above

    def token_logprobs(self, ids: list[int], top_k: int = 0) -> list[TokenLogprob]:
        """One entry per id: its log-probability given the ids before it (None for the first)
        and the `top_k` most likely tokens at its position, best first."""
        ids = list(ids)
        self._check_ids(ids, "prompt")
        if len(ids) > self.context_length:
            raise EngineError(
                f"the prompt has {len(ids)} tokens, more than the model's context of "
                f"{self.context_length}",
                param="prompt",
                code="context_length_exceeded",
            )
        if top_k < 0:
            raise EngineError("top_k must not be negative", param="top_logprobs")
        if not ids:
            return []
        entries = [TokenLogprob(token=ids[0], logprob=None)]
        if len(ids) == 1:
            return entries
        top_k = min(top_k, self.vocab_size)

        def take(offset: int, logits: torch.Tensor) -> None:
            # logits[0, j] predicts ids[offset + j + 1]
            logprobs = torch.log_softmax(logits[0].float(), dim=-1)
            targets = torch.tensor(ids[offset + 1 : offset + 1 + logprobs.shape[0]], device=logprobs.device)
            logprobs = logprobs[: len(targets)]
            chosen = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).tolist()
            if top_k:
                values, indices = logprobs.topk(top_k, dim=-1)
                tops = [tuple(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]
            else:
                tops = [()] * len(chosen)
            for token, logprob, top in zip(targets.tolist(), chosen, tops, strict=True):
                entries.append(TokenLogprob(token=token, logprob=logprob, top=top))

        with self._lock, torch.inference_mode():
            inputs = torch.tensor([ids[:-1]], device=self.device)
            mask = torch.ones_like(inputs)
            self._forward(inputs, mask, mask.cumsum(-1) - 1, self._new_cache(), on_logits=take)
        return entries

    # -- preparing pairs -----------------------------------------------------------------

    def _prepare(self, index: int, context: list[int], continuation: list[int]) -> _Pair | None:
        self._check_ids(context, "context")
        self._check_ids(continuation, "continuation")
        if not context:
            # Nothing predicts the first token: it becomes the context of the rest.
            context, continuation = continuation[:1], continuation[1:]
        if not continuation:
            return None
        if len(continuation) > self.context_length:
            raise EngineError(
                f"a continuation of {len(continuation)} tokens does not fit the model's context of "
                f"{self.context_length}; split it into windows",
                param="continuation",
                code="context_length_exceeded",
            )
        # The model reads context + continuation[:-1]; the context gives up its leftmost tokens.
        room = self.context_length - (len(continuation) - 1)
        return _Pair(index=index, context=tuple(context[-room:]), continuation=continuation)

    def _check_ids(self, ids: list[int], what: str) -> None:
        for token in ids:
            if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < self.vocab_size:
                raise EngineError(
                    f"{what}: {token!r} is not a token id of this model (0..{self.vocab_size - 1})",
                    param=what,
                )

    # -- the forward passes --------------------------------------------------------------

    def _score_contexts(
        self, contexts: list[tuple[int, ...]], members: list[list[_Pair]], batch_size: int
    ) -> list[tuple[int, tuple[float, bool]]]:
        device = self.device
        width = max(len(c) for c in contexts)
        input_ids = torch.full((len(contexts), width), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(contexts), width), dtype=torch.long, device=device)
        for row, ids in enumerate(contexts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, device=device)
            mask[row, width - len(ids) :] = 1
        cache = self._new_cache()
        last: list[torch.Tensor] = []
        # Left padding puts every context's last token in the last column: keep only its logits.
        self._forward(input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0), cache,
                      on_logits=lambda _offset, logits: last.append(logits[:, -1]), keep_last=True)
        first_logprobs = torch.log_softmax(last[-1].float(), dim=-1)  # predicts continuation[0]
        first_greedy = first_logprobs.argmax(-1)

        answers: dict[int, tuple[float, bool]] = {}
        longer: list[tuple[int, _Pair]] = []  # (context row, pair) with tokens left past the first
        for row, pairs in enumerate(members):
            for pair in pairs:
                token = pair.continuation[0]
                answers[pair.index] = (float(first_logprobs[row, token]), int(first_greedy[row]) == token)
                if len(pair.continuation) > 1:
                    longer.append((row, pair))
        # Continuations of all contexts of the batch share the passes, longest first.
        longer.sort(key=lambda item: -len(item[1].continuation))
        # (Passes of more rows, all continuations of the batch at once, measured slower on a
        # CPU: the longest continuation then pads them all.)
        for start in range(0, len(longer), batch_size):
            rows = longer[start : start + batch_size]
            for index, (logprob, greedy) in self._score_continuations(rows, cache, mask, contexts):
                head_logprob, head_greedy = answers[index]
                answers[index] = (head_logprob + logprob, head_greedy and greedy)
        return list(answers.items())

    def _score_continuations(
        self,
        rows: list[tuple[int, _Pair]],
        context_cache: Any,
        context_mask: torch.Tensor,
        contexts: list[tuple[int, ...]],
    ) -> list[tuple[int, tuple[float, bool]]]:
        """Score continuation[1:] of each pair, reading continuation[:-1] on its context's cache."""
        device = self.device
        picked = torch.tensor([row for row, _ in rows], device=device)
        cache = self._new_cache(
            [(layer.keys.index_select(0, picked), layer.values.index_select(0, picked))
             for layer in context_cache.layers]
        )
        width = max(len(pair.continuation) for _, pair in rows) - 1
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long, device=device)
        targets = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        own = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for r, (_, pair) in enumerate(rows):
            n = len(pair.continuation) - 1
            inputs[r, :n] = torch.tensor(pair.continuation[:-1], device=device)
            targets[r, :n] = torch.tensor(pair.continuation[1:], device=device)
            own[r, :n] = 1
        mask = torch.cat([context_mask.index_select(0, picked), own], dim=1)
        starts = torch.tensor([len(contexts[row]) for row, _ in rows], device=device)
        positions = starts.unsqueeze(1) + torch.arange(width, device=device).unsqueeze(0)
        sums = torch.zeros(len(rows), dtype=torch.float64, device=device)
        greedy = torch.ones(len(rows), dtype=torch.bool, device=device)

        def take(offset: int, logits: torch.Tensor) -> None:
            span = slice(offset, offset + logits.shape[1])
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            wanted, real = targets[:, span], own[:, span].bool()
            chosen = logprobs.gather(-1, wanted.unsqueeze(-1)).squeeze(-1)
            sums.add_(torch.where(real, chosen, 0.0).double().sum(-1))
            greedy.logical_and_(((logprobs.argmax(-1) == wanted) | ~real).all(-1))

        self._forward(inputs, mask, positions, cache, on_logits=take, past=context_mask.shape[1])
        return [(pair.index, (float(sums[r]), bool(greedy[r]))) for r, (_, pair) in enumerate(rows)]

    def _forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        *,
        on_logits: Callable[[int, torch.Tensor], None],
        past: int = 0,
        keep_last: bool = False,
    ) -> None:
        """Run input_ids through the model in time segments of at most `token_budget` tokens,
        growing `cache`; `mask` covers the `past` cached columns and all of input_ids.
        on_logits(offset, logits) gets each segment's logits (only the last column's, for the
        last segment alone, with keep_last)."""
        rows, width = input_ids.shape
        step = max(1, self.token_budget // rows)
        for offset in range(0, width, step):
            end = min(offset + step, width)
            final = end == width
            out = self.model(
                input_ids=input_ids[:, offset:end],
                attention_mask=mask[:, : past + end],
                position_ids=positions[:, offset:end],
                use_cache=True,
                logits_to_keep=1 if keep_last else 0,
                **{self._cache_arg: cache},
            )
            if final or not keep_last:
                on_logits(offset, out.logits)

    def _new_cache(self, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
        from transformers import DynamicCache

        return DynamicCache(layers, config=self.model.config)
