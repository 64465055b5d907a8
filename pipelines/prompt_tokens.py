"""A request's prompt as token ids, and what the context leaves for the completion: the same for every
engine that tokenizes itself (transformers, OpenVINO)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pipelines.engine import ContextLengthExceeded, EngineError, GenerationRequest


class PromptTokens:
    def __init__(self, tokenizer: Any, model_id: str, context_length: int, vocab_size: int):
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.context_length = context_length
        self.vocab_size = vocab_size
        self._cache: dict[object, list[int]] = {}
        self._lock = threading.Lock()

    def ids(self, request: GenerationRequest) -> list[int]:
        # validate() and stream() and the n choices of one request all need the same ids.
        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        key = request.prompt if request.messages is None else tuple(
            tuple(sorted(m.items())) for m in request.messages
        )
        with self._lock:  # servers on several event loops may share one engine
            ids = self._cache.get(key)
        if ids is None:
            ids = self._tokenize(request)
            with self._lock:
                if len(self._cache) >= 256:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = ids
        return ids

    def checked_ids(self, request: GenerationRequest) -> list[int]:
        """The ids, refused (400) when there are none or a given id is not in the vocabulary."""
        ids = self.ids(request)
        if not ids:
            raise EngineError("the prompt is empty", param="prompt")
        if request.prompt_ids is not None and not all(0 <= i < self.vocab_size for i in ids):
            raise EngineError(f"prompt: token ids must be in 0..{self.vocab_size - 1}", param="prompt")
        return ids

    def _tokenize(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            if not self.tokenizer.chat_template:
                raise EngineError(f"model {self.model_id} has no chat template; use /v1/completions")
            text = self.tokenizer.apply_chat_template(
                list(request.messages), tokenize=False, add_generation_prompt=True
            )
            return self.tokenizer(text, add_special_tokens=False).input_ids
        return self.tokenizer(request.prompt or "").input_ids

    def budget(self, request: GenerationRequest, prompt_tokens: int) -> int:
        """The completion's token limit: what was asked, or what the context has left."""
        limit = self.context_length
        wanted = request.params.max_tokens
        if wanted is None:
            if prompt_tokens >= limit:
                raise ContextLengthExceeded(limit, prompt_tokens, 1)
            return limit - prompt_tokens
        if prompt_tokens + wanted > limit:
            raise ContextLengthExceeded(limit, prompt_tokens, wanted)
        return wanted


def stop_token_ids(tokenizer: Any, folder: str | Path) -> set[int]:
    """The ids that end a sequence: the generation config's and the tokenizer's end-of-sequence tokens."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(folder).eos_token_id
    except OSError:
        eos = None
    for value in (eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    if not ids:
        raise EngineError(f"{folder}: the model defines no end-of-sequence token", status=500)
    return ids
