"""A request as an engine's worker thread holds it, and the stream that reads what the worker sends it:
the same for every engine that runs its own worker (transformers, OpenVINO)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pipelines.decoding import TextAccumulator
from pipelines.engine import GenerationRequest, TextDelta


@dataclass(eq=False)
class QueuedSequence:
    request: GenerationRequest
    prompt_ids: list[int]
    max_tokens: int
    accumulator: TextAccumulator
    loop: asyncio.AbstractEventLoop
    outbox: asyncio.Queue
    generated: list[int] = field(default_factory=list)  # what a restart must replay
    completion_tokens: int = 0
    finished: bool = False
    cancelled: bool = False

    @property
    def done(self) -> bool:
        return self.finished or self.cancelled

    def send(self, item: TextDelta | Exception) -> None:
        with contextlib.suppress(RuntimeError):  # its event loop is gone: nobody is waiting
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, item)

    def finish(self, reason: str, text: str = "") -> None:
        self.finished = True
        self.send(TextDelta(text=text, finish_reason=reason, prompt_tokens=len(self.prompt_ids),
                            completion_tokens=self.completion_tokens))


async def outbox_deltas(sequence: QueuedSequence) -> AsyncIterator[TextDelta]:
    """What the worker sends a sequence (deltas, or the exception that ends it), up to its last delta.
    Closing the iterator early sets `cancelled`, which the worker reads at its next step: a closed
    stream stops costing compute."""
    try:
        while True:
            item = await sequence.outbox.get()
            if isinstance(item, Exception):
                raise item
            yield item
            if item.finish_reason:
                return
    finally:
        sequence.cancelled = True
