"""The OpenVINO pipeline in a process of its own, stepping while it has requests.

Why a process: OpenVINO GenAI's Python binding holds the GIL for the whole of `step()` (25–300 ms
here), so in the server's process every step froze the event loop: streams got their tokens in bursts
(inter-token latency p95 ≈ 3 steps), and HTTP requests, tool calls and agents waited behind the batch.
Here the parent only sends requests and reads token ids; a crash in OpenVINO costs a restart of this
process, not the server.

Messages over the connection (tuples, pickled):
  parent → worker: ("add", request_id, token_ids, config, chunks), ("cancel", request_id), ("close",)
                   where chunks is None or (cached_upto, chunk_tokens): prefill the prompt chunk by chunk
                   from cached_upto (see Prefill) while other requests decode;
  worker → parent: ("ready",) or ("error", text) once built;
                   ("step", [(request_id, new_token_ids, finished)], [(request_id, refusal)], seconds, chunks)
                   after each step (chunks: prefill chunks added since the last message), or after adds the
                   pipeline refused;
                   ("reset", text) when a step failed: the pipeline was rebuilt and every request lost.

    python -m pipelines.openvino_worker FD SETTINGS_JSON
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("agentd.openvino_worker")

_CHUNK_IDS = itertools.count(2**48)  # the one-token requests of chunks, apart from the parent's ids


def build(settings: dict[str, Any]) -> Any:
    import openvino_genai as genai

    scheduler = genai.SchedulerConfig()
    scheduler.num_kv_blocks = settings["kv_blocks"]
    scheduler.enable_prefix_caching = True  # agent steps and chat turns share their prefix
    scheduler.dynamic_split_fuse = True  # a long prompt is prefilled over steps beside the others' decoding
    scheduler.max_num_batched_tokens = settings["max_batched_tokens"]
    return genai.ContinuousBatchingPipeline(settings["ir"], scheduler, "CPU", settings["properties"])


def generation_config(fields: dict[str, Any]) -> Any:
    import openvino_genai as genai

    config = genai.GenerationConfig()
    grammar = fields.pop("grammar", None)
    for name, value in fields.items():
        setattr(config, name, set(value) if name == "stop_token_ids" else value)
    if grammar is not None:
        config.structured_output_config = genai.StructuredOutputConfig(grammar=grammar)
    return config


@dataclass
class Prefill:
    """A long prompt that joined decoding requests, prefilled one chunk a step before the request itself.

    The pipeline's prefill budget per step is fixed when it is built, and one budget cannot serve both
    loads: a small one doubles TTFT when many short prompts arrive at once, a large one stalls running
    requests while a long prompt prefills. So each chunk is a one-token request for a growing prefix of the
    prompt, whose blocks stay in the prefix cache; the request itself then finds its prompt cached.

    The next chunk is added here, right after the step that prefilled the last: a round trip to the parent
    left a plain step between chunks, and each step whose batch changed shape paid ≈ 10 ms more (so the
    prompt took twice the steps and the others' steps were slower, chunk or not)."""

    request_id: int
    ids: list[int]
    config: dict[str, Any]
    upto: int  # the prompt's tokens in the prefix cache (or being prefilled by `chunk`)
    size: int
    chunk: Any = None  # the handle of the chunk in flight

    def next_ids(self, others_running: bool) -> list[int] | None:
        """The prefix the next chunk prefills, or None when the request itself goes in: its prompt's last
        chunk, or all that is left once no other request is running."""
        if others_running and len(self.ids) - self.upto > self.size:
            self.upto += self.size
            return self.ids[:self.upto]
        return None


def serve(connection: Connection, settings: dict[str, Any]) -> None:
    import numpy as np
    import openvino as ov
    import openvino_genai as genai

    try:
        pipe = build(settings)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    connection.send(("ready",))
    handles: dict[int, Any] = {}
    prefills: collections.deque[Prefill] = collections.deque()  # one at a time, first come first
    chunks = 0

    def add(request_id: int, ids: list[int], config: dict[str, Any]) -> Any:
        return pipe.add_request(request_id, ov.Tensor(np.array([ids], dtype=np.int64)), generation_config(config))

    def admit(request_id: int, ids: list[int], config: dict[str, Any], refused: list[tuple[int, str]]) -> None:
        try:
            handles[request_id] = add(request_id, ids, config)
        except Exception as error:  # noqa: BLE001 - this request's failure only
            refused.append((request_id, str(error)))

    def advance(refused: list[tuple[int, str]]) -> None:
        """The first prefill's next chunk, once its last is cached; its request after its last chunk."""
        nonlocal chunks
        while prefills and (prefills[0].chunk is None or prefills[0].chunk.get_status() != genai.GenerationStatus.RUNNING):
            prefill = prefills[0]
            if (prefix := prefill.next_ids(bool(handles))) is None:
                admit(prefill.request_id, prefill.ids, prefill.config, refused)
                prefills.popleft()
                continue
            try:
                prefill.chunk = add(next(_CHUNK_IDS), prefix, {"max_new_tokens": 1, "do_sample": False})
                chunks += 1
                return
            except Exception as error:  # noqa: BLE001 - this request's failure only
                refused.append((prefill.request_id, str(error)))
                prefills.popleft()

    def cancel(request_id: int) -> None:
        if (handle := handles.pop(request_id, None)) is not None:
            handle.cancel()  # its blocks are freed at the next step
        for prefill in [p for p in prefills if p.request_id == request_id]:
            if prefill.chunk is not None:
                prefill.chunk.cancel()
            prefills.remove(prefill)

    while True:
        if not handles and not prefills and not pipe.has_non_finished_requests():
            connection.poll(None)  # idle: wait for work
        refused: list[tuple[int, str]] = []
        while connection.poll():
            message = connection.recv()
            if message[0] == "close":
                return
            if message[0] == "add":
                _, request_id, ids, config, chunking = message
                if chunking is None:
                    admit(request_id, ids, config, refused)
                else:
                    prefills.append(Prefill(request_id, ids, config, *chunking))
            elif message[0] == "cancel":
                cancel(message[1])
        advance(refused)
        if not handles and not prefills and not pipe.has_non_finished_requests():
            if refused:
                connection.send(("step", [], refused, 0.0, chunks))
                chunks = 0
            continue
        started = time.perf_counter()
        try:
            pipe.step()
        except Exception as error:  # noqa: BLE001 - the pipeline is unusable after a failed step
            log.exception("generation step failed; rebuilding the pipeline")
            handles.clear()
            prefills.clear()
            pipe = build(settings)
            connection.send(("reset", str(error)))
            continue
        seconds = time.perf_counter() - started
        outputs = []
        for request_id, handle in list(handles.items()):
            tokens: list[int] = []
            while handle.can_read():
                for output in handle.read().values():
                    tokens.extend(int(token) for token in output.generated_ids)
            finished = handle.get_status() != genai.GenerationStatus.RUNNING and not handle.can_read()
            if finished:
                del handles[request_id]
            if tokens or finished:
                outputs.append((request_id, tokens, finished))
        advance(refused)  # before the next step, which the next chunk joins
        connection.send(("step", outputs, refused, seconds, chunks))
        chunks = 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    channel = socket.socket(fileno=int(sys.argv[1]))
    connection = Connection(channel.detach())
    try:
        serve(connection, json.loads(sys.argv[2]))
    except (EOFError, OSError):
        pass  # the parent is gone
    finally:
        connection.close()


if __name__ == "__main__":
    main()
