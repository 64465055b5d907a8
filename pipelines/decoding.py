"""Per-sequence decoding pieces: sampling, stop strings, incremental detokenising, grammars."""

from __future__ import annotations

import json
from typing import Any

import torch

from pipelines.engine import Constraint


class TextAccumulator:
    """Turns a growing list of token ids into text deltas, honouring stop strings.

    Text that might be the start of a stop string is held back until it is known not to be,
    and a token that ends mid-character is held back until the character is complete.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]):
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._ids: list[int] = []
        self._emitted = 0
        self.text = ""

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; return (new text that is safe to send, whether a stop string hit)."""
        self._ids.append(token_id)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return "", False
        self.text = text
        hit = self._find_stop(text)
        if hit is not None:
            self.text = text[:hit]
            return self._take(hit), True
        return self._take(len(text) - self._held_back(text)), False

    def flush(self) -> str:
        """Everything not yet sent (the sequence ended without a stop string)."""
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        if upto <= self._emitted:
            return ""
        piece = self.text[self._emitted : upto]
        self._emitted = upto
        return piece

    def _find_stop(self, text: str) -> int | None:
        start = max(0, self._emitted - self._longest_stop)
        hits = [i for i in (text.find(s, start) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self, text: str) -> int:
        for size in range(min(self._longest_stop - 1, len(text)), 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) for s in self._stop):
                return size
        return 0


def sample_next_tokens(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ps: list[float],
    generators: list[torch.Generator | None],
) -> list[int]:
    """One token per row; temperature 0 is greedy. Each row may have its own seeded RNG."""
    tokens: list[int] = []
    for row, temperature, top_p, generator in zip(
        logits, temperatures, top_ps, generators, strict=True
    ):
        if temperature <= 0.0:
            tokens.append(int(torch.argmax(row)))
            continue
        probs = torch.softmax(row / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p
            sorted_probs[outside] = 0.0
            choice = torch.multinomial(sorted_probs, 1, generator=generator)
            tokens.append(int(order[choice]))
        else:
            tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
    return tokens


class GrammarCompiler:
    """Compiles constraints to xgrammar grammars for one tokenizer and hands out matchers.

    xgrammar was chosen over outlines because a matcher per sequence that yields a token
    bitmask per step fits a continuous-batching loop where rows join and leave at any step;
    outlines wraps `generate` for a whole batch.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]):
        import xgrammar

        self._xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        self.vocab_size = vocab_size
        self._compiler = xgrammar.GrammarCompiler(info, cache_enabled=True)

    def matcher(self, constraint: Constraint) -> Any:
        xgr = self._xgr
        if constraint.kind == "json_object":
            compiled = self._compiler.compile_json_schema(
                json.dumps({"type": "object"}), any_whitespace=False
            )
        elif constraint.kind == "json_schema":
            compiled = self._compiler.compile_json_schema(
                json.dumps(constraint.schema or {}), any_whitespace=False
            )
        else:
            from xgrammar.structural_tag import (
                JSONSchemaFormat,
                StructuralTag,
                TagFormat,
                TriggeredTagsFormat,
            )

            tag = TagFormat(
                begin=constraint.trigger,
                content=JSONSchemaFormat(json_schema=constraint.schema or {}),
                end=constraint.end,
            )
            structural = StructuralTag(
                format=TriggeredTagsFormat(
                    triggers=[constraint.trigger],
                    tags=[tag],
                    stop_after_first=constraint.stop_after_first,
                )
            )
            compiled = self._compiler.compile_structural_tag(structural)
        return xgr.GrammarMatcher(compiled)

    def allocate_bitmask(self, rows: int) -> torch.Tensor:
        return self._xgr.allocate_token_bitmask(rows, self.vocab_size)

    def apply_bitmask(self, logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
        self._xgr.apply_token_bitmask_inplace(
            logits, bitmask, vocab_size=self.vocab_size, indices=rows
        )
