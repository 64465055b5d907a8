"""The serving benchmark's load generator, run in its own process so that its JSON parsing and
event loop do not share a CPU core's time slice (or the GIL) with the server under test.

It reads one job per line on stdin, `{"url": ".../v1", "model": ..., "clients": N, "max_tokens": M}`,
runs N concurrent greedy streamed chats against that OpenAI-compatible endpoint, and answers one
line `{"tokens": total completion tokens, "wall": seconds, "ttfts": [seconds, ...]}`.

    .venv/bin/python -m benchmarks.serving_client   # driven by benchmarks/serving.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx

TOPICS = ["the sea", "a robot", "a city at night", "an old tree", "a lost key", "the moon",
          "a small dog", "a train", "winter", "a library", "a storm", "a garden", "a violin",
          "the desert", "a bridge", "a lighthouse"]


def prompt(i: int) -> str:
    return f"Write a long story about {TOPICS[i % len(TOPICS)]}."


async def one_stream(http: httpx.AsyncClient, model: str, i: int, max_tokens: int) -> tuple[float | None, int]:
    """One streamed chat: (seconds to the first content token, completion tokens by the server's usage)."""
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": prompt(i)}]}
    start, first, tokens = time.perf_counter(), None, 0
    async with http.stream("POST", "/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{response.status_code} from {http.base_url}: {response.text[:500]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return first, tokens


async def run(job: dict[str, Any]) -> dict[str, Any]:
    clients = int(job["clients"])
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=job["url"].rstrip("/"), timeout=600, limits=limits) as http:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_stream(http, job["model"], i, int(job["max_tokens"]))
                                         for i in range(clients)))
        wall = time.perf_counter() - start
    return {"tokens": sum(tokens for _, tokens in results), "wall": wall,
            "ttfts": sorted(first for first, _ in results if first is not None)}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = asyncio.run(run(json.loads(line)))
        except Exception as error:  # noqa: BLE001 (reported to the driver, which stops the run)
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
