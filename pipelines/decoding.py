"""Per-sequence decoding pieces: sampling, stop strings, incremental detokenising, grammars."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections import OrderedDict
from typing import Any

import torch

from pipelines.engine import Constraint, ConstraintError, SamplingParams, TokenLogprobs, TopLogprob


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


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """One row's next token; temperature 0 is greedy. A seeded row has its own RNG."""
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    scaled = logits / temperature
    if torch.isinf(scaled.max()):  # so small a temperature overflows: it means greedy
        return int(torch.argmax(logits))
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p
        sorted_probs[outside] = 0.0
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def adjust_logits(
    logits: torch.Tensor, params: SamplingParams, generated: list[int], bias: tuple[torch.Tensor, torch.Tensor] | None
) -> None:
    """Apply OpenAI's presence/frequency penalties (over the tokens generated so far) and the
    logit bias (token ids, values) to one row's logits, in place."""
    # The bias and the counts are built on the CPU; the logits may be on a GPU.
    if bias is not None:
        logits[bias[0].to(logits.device)] += bias[1].to(logits.device, logits.dtype)
    if generated and (params.presence_penalty or params.frequency_penalty):
        size = logits.shape[-1]
        counts = torch.bincount(torch.tensor(generated, device=logits.device), minlength=size)[:size].to(logits.dtype)
        logits -= counts * params.frequency_penalty + (counts > 0).to(logits.dtype) * params.presence_penalty


def token_logprobs(
    logprobs: torch.Tensor, token: int, top_k: int, spell: TokenSpeller
) -> TokenLogprobs:
    """A sampled token's entry from its row's log-probabilities: its own and the top k. Both
    come from the same tensor, so a greedy token's logprob equals the best top one exactly
    (lm-evaluation-harness tests greediness with `==`)."""
    top: tuple[TopLogprob, ...] = ()
    if top_k:
        values, ids = torch.topk(logprobs, min(top_k, logprobs.shape[-1]))
        top = tuple(
            TopLogprob(*spell(int(i)), float(v)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)
            if v != float("-inf")  # a token the grammar forbids is no alternative
        )
    return TokenLogprobs(*spell(token), float(logprobs[token]), top)


class TokenSpeller:
    """A token id's text and raw bytes, as the OpenAI API shows them: byte-level BPE pieces
    (`Ġthe`) are mapped back to their bytes, SentencePiece byte tokens (`<0xE2>`) too; a
    piece that is not whole UTF-8 is spelled `bytes:\\xe2\\x80`, as OpenAI does."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = type(getattr(backend, "decoder", None)).__name__
        self._byte_level = decoder == "ByteLevel"
        self._byte_of = {char: byte for byte, char in _gpt2_byte_chars().items()}
        self._special = set(tokenizer.all_special_ids)
        self._cache: dict[int, tuple[str, bytes]] = {}

    def __call__(self, token: int) -> tuple[str, bytes]:
        spelled = self._cache.get(token)
        if spelled is None:
            raw = self.bytes_of(token)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            spelled = self._cache[token] = (text, raw)
        return spelled

    def bytes_of(self, token: int) -> bytes:
        piece = self._tokenizer.convert_ids_to_tokens(token)
        if piece is None:
            return b""
        if token in self._special:
            return piece.encode()
        if self._byte_level and all(c in self._byte_of for c in piece):
            return bytes(self._byte_of[c] for c in piece)
        match = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
        if match:
            return bytes([int(match.group(1), 16)])
        return piece.replace("\u2581", " ").encode()


def _gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which every byte-level BPE vocabulary uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class GrammarCompiler:
    """Compiles constraints to xgrammar grammars for one tokenizer and hands out matchers.

    xgrammar was chosen over outlines because a matcher per sequence that yields a token
    bitmask per step fits a continuous-batching loop where rows join and leave at any step;
    outlines wraps `generate` for a whole batch.

    Compiling takes milliseconds to seconds, so callers run `compile` off the event loop and
    before a stream starts (a schema xgrammar cannot handle must be the client's 400, not a
    broken stream); the small cache lets the stream that follows, and the n choices of one
    request, reuse the grammar.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int], cache_size: int = 64):
        import xgrammar

        self._xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        self.vocab_size = vocab_size
        # Our cache is bounded; xgrammar's own one is not, so it stays off.
        self._compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def compile(self, constraint: Constraint) -> Any:
        """The compiled grammar; raises ConstraintError for a schema xgrammar cannot compile."""
        key = json.dumps(dataclasses.asdict(constraint), sort_keys=True)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            compiled = self._compile(constraint)
        except (RuntimeError, ValueError, TypeError) as error:
            raise constraint_error(error) from error
        with self._lock:
            self._cache[key] = compiled
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def _compile(self, constraint: Constraint) -> Any:
        return self._compiler.compile_grammar(grammar_of(constraint))

    def matcher(self, compiled: Any) -> Any:
        return self._xgr.GrammarMatcher(compiled)

    def allocate_bitmask(self, rows: int) -> torch.Tensor:
        return self._xgr.allocate_token_bitmask(rows, self.vocab_size)

    def apply_bitmask(self, logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
        self._xgr.apply_token_bitmask_inplace(
            logits, bitmask, vocab_size=self.vocab_size, indices=rows
        )


def grammar_of(constraint: Constraint) -> Any:
    """The xgrammar grammar a constraint stands for (compact JSON: no whitespace a client did not ask for).
    Its EBNF text (`str(grammar)`) is what engines with their own xgrammar inside (OpenVINO GenAI) take."""
    import xgrammar

    if constraint.kind in ("json_object", "json_schema"):
        schema = {"type": "object"} if constraint.kind == "json_object" else (constraint.schema or {})
        return xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
    from xgrammar.structural_tag import JSONSchemaFormat, StructuralTag, TagFormat, TriggeredTagsFormat

    tag = TagFormat(begin=constraint.trigger, content=JSONSchemaFormat(json_schema=constraint.schema or {}),
                    end=constraint.end)
    return xgrammar.Grammar.from_structural_tag(StructuralTag(format=TriggeredTagsFormat(
        triggers=[constraint.trigger], tags=[tag], stop_after_first=constraint.stop_after_first)))


def constraint_error(error: Exception) -> ConstraintError:
    return ConstraintError(_xgrammar_reason(error))


def _xgrammar_reason(error: Exception) -> str:
    """xgrammar's message without its log prefix ("[05:35:05] /project/cpp/x.cc:83: ")."""
    reason = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", str(error).strip())
    return f"the JSON schema cannot be enforced: {reason}"
