"""Serving benchmark: the same engine called in-process and through the HTTP server.

For 1, 4 and 16 concurrent streaming clients it prints total tokens/s and time to first token
(p50/p95) both ways, and the ratios: what the HTTP layer (FastAPI, SSE, JSON, the client's
parsing) costs, and what batching gains over one client. Same process, same engine, same
greedy requests, so both sides generate the very same tokens.

    .venv/bin/python benchmarks/serving.py [--max-tokens 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentd.config import Settings  # noqa: E402
from agentd.server.app import create_app  # noqa: E402
from agentd.server.background import BackgroundServer  # noqa: E402
from pipelines.embedded import EMBEDDED_MODEL_ID  # noqa: E402
from pipelines.engine import GenerationRequest, SamplingParams  # noqa: E402
from pipelines.registry import ModelRegistry, ModelSpec  # noqa: E402

TOPICS = ["the sea", "a robot", "a city at night", "an old tree", "a lost key", "the moon",
          "a small dog", "a train", "winter", "a library", "a storm", "a garden", "a violin",
          "the desert", "a bridge", "a lighthouse"]


def prompt(i: int) -> str:
    return f"Write a long story about {TOPICS[i % len(TOPICS)]}."


async def in_process(engine, clients: int, max_tokens: int):
    async def one(i: int):
        request = GenerationRequest(
            params=SamplingParams(max_tokens=max_tokens, temperature=0),
            messages=({"role": "user", "content": prompt(i)},),
        )
        start, first, tokens = time.perf_counter(), None, 0
        async for delta in engine.stream(request):
            if first is None and delta.text:
                first = time.perf_counter() - start
            tokens = delta.completion_tokens or tokens
        return first, tokens

    return await _timed(one, clients)


async def over_http(url: str, clients: int, max_tokens: int):
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        async def one(i: int):
            body = {"model": EMBEDDED_MODEL_ID, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": prompt(i)}]}
            start, first, tokens = time.perf_counter(), None, 0
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        first = time.perf_counter() - start
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
            return first, tokens

        return await _timed(one, clients)


async def _timed(one, clients: int):
    start = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(clients)))
    wall = time.perf_counter() - start
    ttfts = sorted(r[0] for r in results if r[0] is not None)
    return {"tokens": sum(r[1] for r in results), "wall": wall, "ttfts": ttfts}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data-dir", type=Path, default=Settings().data_dir)
    args = parser.parse_args()

    registry = ModelRegistry([ModelSpec(id=EMBEDDED_MODEL_ID, kind="embedded")], args.data_dir, dtype=args.dtype)
    asyncio.run(registry.load_all())
    engine = registry.engines[EMBEDDED_MODEL_ID]
    server = BackgroundServer(create_app(Settings(data_dir=args.data_dir), registry))
    asyncio.run(in_process(engine, 2, 8))  # warm-up: first-call allocations and kernels
    asyncio.run(over_http(server.url, 2, 8))

    rows = []
    for clients in args.clients:
        local, remote = {"tokens": 0, "wall": 0.0, "ttfts": []}, {"tokens": 0, "wall": 0.0, "ttfts": []}
        for _ in range(args.rounds):  # interleaved, so drift in machine load hits both sides
            for total, run in ((local, in_process(engine, clients, args.max_tokens)),
                               (remote, over_http(server.url, clients, args.max_tokens))):
                result = asyncio.run(run)
                total["tokens"] += result["tokens"]
                total["wall"] += result["wall"]
                total["ttfts"] += result["ttfts"]
        rows.append((clients, local, remote))
    server.stop()

    base = rows[0][1]["tokens"] / rows[0][1]["wall"]
    print(f"\nSmolLM2-135M {args.dtype}, {args.max_tokens} tokens per client, greedy, {args.rounds} rounds\n")
    print("| clients | in-process tok/s | HTTP tok/s | HTTP/in-process | TTFT p50 / p95 in-process (ms) "
          "| TTFT p50 / p95 HTTP (ms) | HTTP TTFT cost p50 (ms) | batching gain (in-process vs 1 client) |")
    print("|---|---|---|---|---|---|---|---|")
    for clients, local, remote in rows:
        lt, rt = local["tokens"] / local["wall"], remote["tokens"] / remote["wall"]
        lp50, rp50 = pct(local["ttfts"], 0.5) * 1000, pct(remote["ttfts"], 0.5) * 1000
        print(f"| {clients} | {lt:.1f} | {rt:.1f} | {rt / lt:.3f} | {lp50:.0f} / {pct(local['ttfts'], 0.95) * 1000:.0f} "
              f"| {rp50:.0f} / {pct(remote['ttfts'], 0.95) * 1000:.0f} | {rp50 - lp50:+.1f} | {lt / base:.2f}x |")
    asyncio.run(registry.close())


if __name__ == "__main__":
    main()
