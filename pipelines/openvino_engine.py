"""The CPU engine at vLLM-CPU's speed: OpenVINO GenAI's continuous-batching pipeline (paged KV cache,
prefix caching, chunked prefill, a KV-cache budget), fed and read as token ids, in a worker process of
its own (openvino_worker: its Python binding holds the GIL through every step).

Why not our own loop: an eager transformers forward alone is 0.4–0.8× of vLLM-CPU on this machine
(MEASURED.md), whatever the loop around it; OpenVINO's scheduler and kernels reach vLLM-CPU's level.
What stays ours: tokenizing (the same chat template and ids as the transformers engine), stop
strings and detokenising (TextAccumulator), token counts, cancellation, and the constraint (our
Constraint compiled to the EBNF that OpenVINO's own xgrammar enforces inside the batch).

What OpenVINO does not offer is served by a transformers engine on the same weights, loaded on first
use: top logprobs, echo, logit_bias and penalties, and scoring (evaluation's log-likelihoods).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import queue
import random
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pipelines.decoding import TextAccumulator, constraint_error
from pipelines.engine import Constraint, EngineError, EngineInfo, GenerationRequest, TextDelta, TextEngine
from pipelines.openvino_grammar import Unsupported, openvino_grammar
from pipelines.prompt_tokens import PromptTokens, stop_token_ids
from pipelines.sequences import QueuedSequence, outbox_deltas

log = logging.getLogger(__name__)

_BLOCK_TOKENS = 32
_GREEDY_BELOW = 1e-6  # a smaller temperature overflows the scaled logits: it means greedy, as in our loop
@dataclass(eq=False)
class _Sequence(QueuedSequence):
    grammar: str | None = None
    request_id: int | None = None  # its request in the worker's pipeline, while it has one
    restarts: int = 0

    def fail(self, error: EngineError) -> None:
        self.finished = True
        self.send(error)


class OpenVINOEngine(TextEngine):
    # Served here or, for what OpenVINO lacks, by the transformers engine behind it.
    supported_extras = frozenset({"presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "echo"})

    def __init__(self, model_id: str, folder: str | Path, *, cache_dir: str | Path, adapter: str | Path | None = None,
                 kv_cache_mb: float = 1024, max_batched_tokens: int = 256, prefill_chunk: int = 32, precision: str = "bf16"):
        from transformers import AutoConfig, AutoTokenizer

        from pipelines.openvino_export import exported

        self._folder, self._adapter = Path(folder), adapter
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        context = getattr(config, "max_position_embeddings", None) or 2048
        # The KV cache's budget in blocks (the CPU plugin's are 32 tokens of f16 keys and values per layer):
        # requests beyond it wait in the scheduler's queue; one that could never fit is refused up front.
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        token_bytes = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * 2
        self._kv_blocks = max(1, int(kv_cache_mb * 2**20 // (_BLOCK_TOKENS * token_bytes)))
        self.kv_cache_tokens = self._kv_blocks * _BLOCK_TOKENS
        self._ir = exported(self._folder, Path(cache_dir), Path(adapter) if adapter else None)
        self.info = EngineInfo(id=model_id, context_length=int(context),
                               meta={"path": str(folder), "backend": "openvino", "ir": str(self._ir)})
        self._eos_ids = stop_token_ids(self.tokenizer, folder)
        self._prompts = PromptTokens(self.tokenizer, model_id, self.info.context_length, int(config.vocab_size))
        self._max_batched_tokens, self._precision = max_batched_tokens, precision
        # A long prompt joining decoding streams is prefilled this many tokens a step (openvino_worker.Prefill).
        self._prefill_chunk = max(_BLOCK_TOKENS, prefill_chunk - prefill_chunk % _BLOCK_TOKENS)
        self._spawn()
        self._grammars: dict[str, str] = {}
        self._grammar_lock = threading.Lock()
        self._ids = itertools.count()
        self._pending: queue.SimpleQueue[_Sequence | None] = queue.SimpleQueue()
        self._live: list[_Sequence] = []
        self._active = 0
        self._closing = False
        self._closing_lock = threading.Lock()
        self._fallback: TextEngine | None = None
        # Blocks of prompts seen (chained hashes, least recently used first), as the pipeline's prefix
        # cache keeps them: OpenVINO reports the cache's use, not its hits, so they are counted here.
        self._seen_blocks: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._prefix_hits = self._prefix_total = 0
        self.prefill_chunks = 0  # chunks of long prompts prefilled beside decoding streams
        self.pipeline_steps, self.pipeline_seconds = 0, 0.0  # the worker's steps and the time inside them
        self._by_request: dict[int, _Sequence] = {}
        self._fallback_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name=f"engine-{model_id}", daemon=True)
        self._worker.start()

    def _spawn(self) -> None:
        """Starts the worker process (see openvino_worker) and waits until its pipeline is built."""
        settings = {"ir": str(self._ir), "kv_blocks": self._kv_blocks, "max_batched_tokens": self._max_batched_tokens,
                    # bf16 where the CPU has it (1.8x the tokens/s of f32 at 16 streams here; a CPU without
                    # it runs f32); f32 keeps greedy output equal to the transformers engine's (bf16 drifts
                    # within a few tokens). The KV cache is f16 either way (u8, the default, drifts too).
                    "properties": {"INFERENCE_PRECISION_HINT": self._precision, "KV_CACHE_PRECISION": "f16"}}
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        # -P: the current folder is not searched first (a user's own `pipelines` package would be run).
        command = [sys.executable, "-P", "-m", "pipelines.openvino_worker", str(theirs.fileno()), json.dumps(settings)]
        self._process = subprocess.Popen(command, pass_fds=[theirs.fileno()], env=env)
        theirs.close()
        self._conn = Connection(ours.detach())
        try:
            ready = self._conn.recv()
        except (EOFError, OSError):
            ready = ("error", f"the worker process exited with {self._process.wait()}")
        if ready[0] != "ready":
            self._conn.close()
            raise RuntimeError(f"the OpenVINO pipeline could not start: {ready[1]}")

    # -- the async side -------------------------------------------------------------------

    async def _route(self, request: GenerationRequest) -> tuple[bool, str | None]:
        """Whether the pipeline serves this request (not the transformers engine behind it), and its grammar
        there: not when it uses a field OpenVINO lacks, nor when its grammar has a long string bound it
        must keep exactly."""
        if request.params.extras():
            return False, None
        if request.constraint is None:
            return True, None
        # Written here, before any step: a grammar OpenVINO fails on inside a step would take the batch with it.
        grammar = await asyncio.to_thread(self._grammar, request.constraint)
        return grammar is not None, grammar

    async def validate(self, request: GenerationRequest) -> int:
        if not (await self._route(request))[0]:
            return await (await self._transformers()).validate(request)
        ids = self._prompts.checked_ids(request)
        self._completion_budget(request, len(ids))
        return len(ids)

    def _completion_budget(self, request: GenerationRequest, prompt_tokens: int) -> int:
        """The context's limit, and the KV-cache budget's: a sequence larger than the whole cache would
        wait in the queue forever."""
        wanted = self._prompts.budget(request, prompt_tokens)
        room = self.kv_cache_tokens - prompt_tokens
        if request.params.max_tokens is None and room > 0:
            return min(wanted, room)
        if wanted > room:
            raise EngineError(f"the prompt ({prompt_tokens} tokens) and the completion ({wanted}) do not fit in "
                              f"this server's KV cache of {self.kv_cache_tokens} tokens; ask for fewer tokens",
                              param="max_tokens" if request.params.max_tokens else "messages")
        return wanted

    def _grammar(self, constraint: Constraint) -> str | None:
        """The constraint in the pipeline's grammar dialect, or None when the pipeline cannot take it (see
        openvino_grammar): the transformers engine behind it enforces that one."""
        key = json.dumps(dataclasses.asdict(constraint), sort_keys=True)
        with self._grammar_lock:
            if key in self._grammars:
                return self._grammars[key]
        try:
            grammar: str | None = openvino_grammar(constraint)
        except Unsupported as reason:
            log.info("%s: a constraint goes to the transformers engine: %s", self.info.id, reason)
            grammar = None
        except (RuntimeError, ValueError, TypeError) as error:
            raise constraint_error(error) from error
        with self._grammar_lock:
            if len(self._grammars) >= 64:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TextDelta]:
        native, grammar = await self._route(request)
        if not native:
            async for delta in (await self._transformers()).stream(request):
                yield delta
            return
        prompt_ids = self._prompts.ids(request)
        seq = _Sequence(request=request, prompt_ids=prompt_ids,
                        max_tokens=self._completion_budget(request, len(prompt_ids)),
                        accumulator=TextAccumulator(self.tokenizer, request.params.stop),
                        loop=asyncio.get_running_loop(), outbox=asyncio.Queue(), grammar=grammar)
        with self._closing_lock:
            if self._closing:
                raise self._unloaded()
            self._pending.put(seq)
        async with contextlib.aclosing(outbox_deltas(seq)) as deltas:  # closed with this stream, at once
            async for delta in deltas:
                yield delta

    async def _transformers(self) -> TextEngine:
        if self._fallback is None:
            await asyncio.to_thread(self._load_fallback)
        assert self._fallback is not None
        return self._fallback

    def _load_fallback(self) -> None:
        with self._fallback_lock:
            if self._fallback is None:
                from pipelines.transformers_engine import TransformersEngine

                log.info("%s: loading the transformers engine for scoring and logprobs", self.info.id)
                self._fallback = TransformersEngine(self.info.id, self._folder, dtype="float32",
                                                    adapter=self._adapter)

    async def loglikelihoods(self, pairs: list[tuple[list[int], list[int]]], batch_size: int = 8
                             ) -> list[tuple[float, bool]]:
        return await (await self._transformers()).loglikelihoods(pairs, batch_size)

    async def prompt_logprobs(self, ids: list[int], top_k: int = 0) -> list[Any]:
        return await (await self._transformers()).prompt_logprobs(ids, top_k)

    @property
    def active_sequences(self) -> int:
        return self._active + (self._fallback.active_sequences if self._fallback else 0)

    async def close(self) -> None:
        with self._closing_lock:
            self._closing = True
            self._pending.put(None)
        await asyncio.to_thread(self._worker.join, 30)
        if self._fallback is not None:
            await self._fallback.close()

    def _unloaded(self) -> EngineError:
        return EngineError(f"the model {self.info.id} was unloaded; retry", status=503, param="model")

    # -- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            self._admit(block=not self._live)
            for seq in self._live:
                if seq.cancelled and seq.request_id is not None:
                    self._cancel(seq)  # its cache blocks are freed at the worker's next step
            self._live = [s for s in self._live if not s.done]
            self._active = len(self._live)
            if self._live:
                self._receive()
        for seq in self._live:
            if not seq.done:
                seq.fail(self._unloaded())
        with contextlib.suppress(queue.Empty):
            while True:
                seq = self._pending.get_nowait()
                if seq is not None and not seq.done:
                    seq.fail(self._unloaded())
        self._active = 0
        self._stop_worker()

    def _stop_worker(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("close",))
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._conn.close()

    def _admit(self, block: bool) -> None:
        while True:
            try:
                seq = self._pending.get(block=block)
            except queue.Empty:
                return
            block = False
            if seq is None:
                return
            if not seq.done:
                self._submit(seq)

    def _receive(self) -> None:
        """Reads one message of the worker's (a second without one returns, to notice cancellations)."""
        try:
            if not self._conn.poll(1.0):
                return
            message = self._conn.recv()
        except (EOFError, OSError):
            log.error("%s: the OpenVINO worker process died (exit %s); starting another",
                      self.info.id, self._process.poll())
            self._restart()
            return
        if message[0] == "reset":
            log.error("%s: a generation step failed (%s); the pipeline was rebuilt", self.info.id, message[1])
            self._recover()
        else:
            self._take_step(*message[1:])

    def _take_step(self, outputs: list[tuple[int, list[int], bool]], refused: list[tuple[int, str]],
                   seconds: float, chunks: int) -> None:
        """What one of the worker's steps produced: tokens to deliver, requests refused, prefill chunks added."""
        self.pipeline_steps, self.pipeline_seconds = self.pipeline_steps + 1, self.pipeline_seconds + seconds
        self.prefill_chunks += chunks
        for request_id, error in refused:
            if (seq := self._by_request.pop(request_id, None)) is not None:
                seq.fail(EngineError(f"generation failed: {error}", status=500))
        for request_id, tokens, finished in outputs:
            seq = self._by_request.get(request_id)
            if seq is None:
                continue  # cancelled on our side already
            if finished:
                del self._by_request[request_id]
                seq.request_id = None
            for token in tokens:
                self._accept(seq, token)
                if seq.done:
                    break
            if seq.done and not finished:
                self._cancel(seq)  # a stop string or our token limit ended it, not the pipeline
            elif finished and not seq.done:
                seq.finish("length", seq.accumulator.flush())  # the pipeline ended it without a stop token

    def _cancel(self, seq: _Sequence) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("cancel", seq.request_id))
        self._by_request.pop(seq.request_id, None)
        seq.request_id = None

    def _restart(self) -> None:
        """A new worker process after the last one died; the live sequences go on as after a failed step."""
        self._conn.close()
        try:
            self._spawn()
        except RuntimeError as error:
            log.error("%s: %s", self.info.id, error)
            for seq in self._live:
                seq.fail(EngineError(f"the OpenVINO pipeline is unavailable: {error}", status=503))
            self._live, self._by_request = [], {}
            return
        self._recover()

    @property
    def prefix_cache(self) -> tuple[int, int]:
        return self._prefix_hits, self._prefix_total

    def _count_prefix(self, ids: list[int]) -> int:
        """Whole 32-token blocks of this prompt whose prefix was seen before: what the cache can reuse."""
        chained, reused = 0, 0
        for start in range(0, len(ids) - len(ids) % _BLOCK_TOKENS, _BLOCK_TOKENS):
            chained = hash((chained, tuple(ids[start:start + _BLOCK_TOKENS])))
            if reused == start and chained in self._seen_blocks:
                reused += _BLOCK_TOKENS
            self._seen_blocks[chained] = None
            self._seen_blocks.move_to_end(chained)
        while len(self._seen_blocks) > self._kv_blocks:
            self._seen_blocks.popitem(last=False)
        self._prefix_hits += reused
        self._prefix_total += len(ids)
        return reused

    def _submit(self, seq: _Sequence) -> None:
        """Hands the sequence to the pipeline: a long prompt joining decoding streams chunk by chunk (see
        openvino_worker.Prefill), from the first block the prefix cache does not hold."""
        # Chunks start after what the cache holds: an agent's next step shares its long system-and-tools
        # prefix with the last, and chunks from the start would restore those blocks a step at a time.
        # After a failed step the cache went with the pipeline, and the sequence goes on from its tokens.
        cached = self._count_prefix(seq.prompt_ids) if seq.restarts == 0 else 0
        ids = seq.prompt_ids + seq.generated
        self._live.append(seq)
        others_decoding = any(other is not seq and other.completion_tokens and not other.done for other in self._live)
        # A prompt of a few chunks goes whole (one step of it costs less than the chunks' extra requests).
        chunks = None
        if others_decoding and len(ids) - cached > 4 * self._prefill_chunk:
            chunks = (cached, self._prefill_chunk)
        seq.request_id = next(self._ids)
        self._by_request[seq.request_id] = seq
        try:
            self._conn.send(("add", seq.request_id, ids, self._config(seq), chunks))
        except OSError:
            pass  # the worker is gone: the next read finds out and restarts it

    def _config(self, seq: _Sequence) -> dict[str, Any]:
        """The request's GenerationConfig, as the fields the worker sets on one."""
        params = seq.request.params
        config: dict[str, Any] = {"max_new_tokens": seq.max_tokens - seq.completion_tokens,
                                  "stop_token_ids": sorted(self._eos_ids), "do_sample": False}
        if params.temperature > _GREEDY_BELOW:
            seed = params.seed if params.seed is not None else random.getrandbits(31)
            config.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0, rng_seed=seed)
        if seq.grammar is not None:
            config["grammar"] = seq.grammar
        return config

    def _accept(self, seq: _Sequence, token: int) -> None:
        seq.completion_tokens += 1
        if token in self._eos_ids:
            seq.finish("stop", seq.accumulator.flush())
            return
        seq.generated.append(token)
        text, hit_stop = seq.accumulator.push(token)
        if hit_stop:
            seq.finish("stop", text)
        elif seq.completion_tokens >= seq.max_tokens:
            seq.finish("length", text + seq.accumulator.flush())
        elif text:
            seq.send(TextDelta(text=text))

    def _recover(self) -> None:
        """After the pipeline was rebuilt: live sequences go on from the tokens they have, once. A constrained
        one cannot (its grammar state is lost with the pipeline) and fails, as does one that failed before."""
        live, self._live, self._by_request = [s for s in self._live if not s.done], [], {}
        self._seen_blocks.clear()  # the prefix cache went with the pipeline
        for seq in live:
            seq.request_id = None
            if seq.grammar is not None or seq.restarts >= 1:
                seq.fail(EngineError("generation failed inside the OpenVINO pipeline", status=500))
                continue
            seq.restarts += 1
            self._submit(seq)
