"""Where a decode step's time goes, in each engine: the profile issue 15 asks the README for, before (the
transformers engine) and after (the openvino engine).

N streams start together on the embedded model and each decodes 64 tokens, greedy. The engine's worker
methods are wrapped with timers (the engine itself is unchanged), so each step splits into:
- transformers engine: the model's forward (and, from torch.profiler over the same steps, how much of
  it is matrix arithmetic at all), and picking tokens and delivering text (sampling, detokenising,
  stop strings: `_advance`);
- openvino engine: the pipeline's step (OpenVINO's scheduler, paged-attention model and sampler, in
  C++, timed in the worker process) and ours in the server's process (reading the step's tokens,
  detokenising, stop strings, delivery), which overlaps the worker's next step.

    .venv/bin/python benchmarks/step_profile.py [--streams 1,16] [--engines transformers,openvino]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine_features import build, chat  # noqa: E402

TOKENS = 64
MATRIX_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention")


class Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self._running: set[str] = set()

    def wrap(self, owner, name: str, label: str, within: str | None = None) -> None:
        """Times owner.name under label; with `within`, only calls made while that label runs."""
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            if within is not None and within not in self._running:
                return inner(*args, **kwargs)
            started = time.perf_counter()
            self._running.add(label)
            try:
                return inner(*args, **kwargs)
            finally:
                self._running.discard(label)
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1

        setattr(owner, name, timed)


async def run_streams(engine, streams: int) -> float:
    requests = [chat(f"Write a story about a lighthouse keeper number {i}.", TOKENS) for i in range(streams)]

    async def one(request) -> None:
        await engine.validate(request)
        async for _ in engine.stream(request):
            pass

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def warmed_up(name: str, streams: int):
    engine = await asyncio.to_thread(build, name)
    try:
        await run_streams(engine, streams)  # warm-up: first-call allocations and kernels
        yield engine
    finally:
        await engine.close()


async def profile_transformers(streams: int) -> dict[str, float]:
    async with warmed_up("transformers", streams) as engine:
        timers = Timers()
        timers.wrap(engine, "_decode", "decode step")
        timers.wrap(engine, "_advance", "pick and deliver", within="decode step")
        timers.wrap(engine.model, "forward", "forward", within="decode step")
        wall = await run_streams(engine, streams)
        steps = timers.calls["decode step"]
        row = {"wall ms / token step": 1000 * wall / TOKENS,
               "step ms": 1000 * timers.seconds["decode step"] / steps,
               "model ms": 1000 * timers.seconds["forward"] / steps,
               "ours ms (pick tokens, detokenise, deliver)": 1000 * timers.seconds["pick and deliver"] / steps}
        row["matrix arithmetic share of the model"] = await asyncio.to_thread(_matrix_share, engine, streams)
        return row


def _matrix_share(engine, streams: int) -> float:
    """How much of an eager decode forward is matrix arithmetic (matmuls, attention) at all."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = engine.model
    ids = torch.ones((streams, 200), dtype=torch.long)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        cache, step = out.past_key_values, torch.ones((streams, 1), dtype=torch.long)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            for _ in range(16):
                out = model(input_ids=step, past_key_values=cache, use_cache=True)
                cache = out.past_key_values
            wall = time.perf_counter() - started
    matrix_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATRIX_OPS)
    return matrix_us / 1e6 / wall


async def profile_openvino(streams: int) -> dict[str, float]:
    async with warmed_up("openvino", streams) as engine:
        timers = Timers()
        timers.wrap(engine, "_take_step", "ours")
        steps_before, seconds_before = engine.pipeline_steps, engine.pipeline_seconds
        wall = await run_streams(engine, streams)
        steps = engine.pipeline_steps - steps_before
        inside = engine.pipeline_seconds - seconds_before
        row = {"wall ms / token step": 1000 * wall / TOKENS,
               "pipeline step ms (scheduler, model, sampler; worker process)": 1000 * inside / steps,
               "ours ms (pick tokens, detokenise, deliver)": 1000 * timers.seconds["ours"] / steps}
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="transformers,openvino")
    parser.add_argument("--streams", default="1,16")
    args = parser.parse_args()
    profilers = {"transformers": profile_transformers, "openvino": profile_openvino}
    for streams in (int(n) for n in args.streams.split(",")):
        rows = {name: asyncio.run(profilers[name](streams)) for name in args.engines.split(",")}
        keys = list(dict.fromkeys(key for row in rows.values() for key in row))
        print(f"\n{streams} stream(s), {TOKENS} tokens each")
        print("| per decode step | " + " | ".join(rows) + " |")
        print("|---|" + "---|" * len(rows))
        for key in keys:
            print(f"| {key} | " + " | ".join(f"{row[key]:.3g}" if key in row else "" for row in rows.values()) + " |")


if __name__ == "__main__":
    main()
