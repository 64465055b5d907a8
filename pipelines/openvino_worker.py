"""The OpenVINO pipeline in a process of its own, stepping while it has requests.

Why a process: OpenVINO GenAI's Python binding holds the GIL for the whole of `step()` (25–300 ms
here), so in the server's process every step froze the event loop: streams got their tokens in bursts
(inter-token latency p95 ≈ 3 steps), and HTTP requests, tool calls and agents waited behind the batch.
Here the parent only sends requests and reads token ids; a crash in OpenVINO costs a restart of this
process, not the server.

Messages over the connection (tuples, pickled):
  parent → worker: ("add", request_id, token_ids, config), ("cancel", request_id), ("close",)
  worker → parent: ("ready",) or ("error", text) once built;
                   ("step", [(request_id, new_token_ids, finished)], [(request_id, refusal)], seconds)
                   after each step, or after adds the pipeline refused;
                   ("reset", text) when a step failed: the pipeline was rebuilt and every request lost.

    python -m pipelines.openvino_worker FD SETTINGS_JSON
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("agentd.openvino_worker")


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
    while True:
        if not handles and not pipe.has_non_finished_requests():
            connection.poll(None)  # idle: wait for work
        refused = []
        while connection.poll():
            message = connection.recv()
            if message[0] == "close":
                return
            if message[0] == "add":
                _, request_id, ids, fields = message
                try:
                    handles[request_id] = pipe.add_request(
                        request_id, ov.Tensor(np.array([ids], dtype=np.int64)), generation_config(fields))
                except Exception as error:  # noqa: BLE001 - this request's failure only
                    refused.append((request_id, str(error)))
            elif message[0] == "cancel" and (handle := handles.pop(message[1], None)) is not None:
                handle.cancel()  # its blocks are freed at the next step
        if not handles and not pipe.has_non_finished_requests():
            if refused:
                connection.send(("step", [], refused, 0.0))
            continue
        started = time.perf_counter()
        try:
            pipe.step()
        except Exception as error:  # noqa: BLE001 - the pipeline is unusable after a failed step
            log.exception("generation step failed; rebuilding the pipeline")
            handles.clear()
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
        connection.send(("step", outputs, refused, seconds))


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
