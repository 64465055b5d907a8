"""Many clients at once, and clients that leave: nothing dropped, the server answering throughout,
and the engine freed as soon as nobody reads."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from tests.conftest import MODEL

CLIENTS = 64


async def _stream(client: httpx.AsyncClient, index: int) -> tuple[str, bool, list[str]]:
    """(the text, whether `[DONE]` ended it, the errors it carried)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Name a colour. ({index})"}],
            "max_tokens": 6, "temperature": 0, "stream": True}
    text, done, errors = "", False, []
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200, await reply.aread()
        async for line in reply.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                continue
            chunk = json.loads(data)
            if "error" in chunk:
                errors.append(chunk["error"]["message"])
            for choice in chunk.get("choices", []):
                text += choice["delta"].get("content") or ""
    return text, done, errors


async def test_64_streaming_clients_all_finish_while_health_answers(server):
    limits = httpx.Limits(max_connections=CLIENTS + 4)
    async with httpx.AsyncClient(base_url=server.url, timeout=300, limits=limits) as client:
        health: list[tuple[int, float]] = []
        streaming = True

        async def watch_health() -> None:
            while streaming:
                started = time.perf_counter()
                reply = await client.get("/health", timeout=10)
                health.append((reply.status_code, time.perf_counter() - started))
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch_health())
        results = await asyncio.gather(*(_stream(client, i) for i in range(CLIENTS)))
        streaming = False
        await watcher
    assert all(done for _, done, _ in results), "a stream ended without [DONE]"
    assert [errors for _, _, errors in results if errors] == []
    assert all(text for text, _, _ in results)
    assert len(health) >= 4 and {status for status, _ in health} == {200}
    assert max(seconds for _, seconds in health) < 5  # the event loop never stood still behind the batch


async def test_clients_leaving_mid_stream_free_the_engine_within_a_second(server, engine):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 1000, "stream": True}
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:

        async def leave_after(chunks: int) -> None:
            async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                seen = 0
                async for line in reply.aiter_lines():
                    seen += line.startswith("data: ")
                    if seen >= chunks:
                        return  # closing the response here is the client going away

        await asyncio.gather(*(leave_after(3 + i) for i in range(8)))
        left = time.perf_counter()
        while engine.active_sequences and time.perf_counter() - left < 5:
            await asyncio.sleep(0.02)
        freed_after = time.perf_counter() - left
    assert engine.active_sequences == 0 and freed_after <= 1.0, freed_after
