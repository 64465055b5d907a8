"""Agent competence: 60 plain-language requests over agentd's tools, scored without a model.

    .venv/bin/python benchmarks/agent_tasks/run.py [--agents react,rewoo,planner]
        [--backends constrained,unconstrained] [--limit N] [--every K] [--concurrency 8] [--max-steps 4]

Every agent type runs every task on the embedded SmolLM2-135M, with constrained decoding
(the local default) and without it (the same prompts, output parsed as written). Prints per
agent and backend: the share of requests solved (expected tool sequence with correct
arguments), the share of tool-call attempts that were schema-valid, and steps used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

from agentd.agents.runtime import AgentLimits, AgentRuntime  # noqa: E402
from agentd.llm.engine_chat import EngineChatModel  # noqa: E402
from pipelines.embedded import EMBEDDED_MODEL_ID  # noqa: E402
from pipelines.registry import ModelRegistry, ModelSpec  # noqa: E402
from score import score  # noqa: E402
from tools import FileStore, ToolRegistry  # noqa: E402
from tools.builtin import builtin_tools  # noqa: E402

DATA_DIR = HERE.parent.parent / ".agentd"


async def main(args: argparse.Namespace) -> None:
    tasks = [json.loads(line) for line in (HERE / "tasks.jsonl").read_text().splitlines()][:: args.every][: args.limit]
    models = ModelRegistry([ModelSpec(id=EMBEDDED_MODEL_ID, kind="embedded")], DATA_DIR)
    await models.load_all()
    engine = models.engines[EMBEDDED_MODEL_ID]
    work = Path(tempfile.mkdtemp(prefix="agent-tasks-"))
    tools = ToolRegistry(builtin_tools(work), file_store=FileStore(work / "files"))
    await tools.invoke("knowledge_ingest", {"document": f"data:text/markdown;name=handbook.md,"
                                                        f"{(HERE / 'handbook.md').read_text()}"})
    runtime = AgentRuntime(tools, work / "state", limits=AgentLimits(max_steps=args.max_steps, max_calls=1))
    await runtime.open()
    rows = []
    for agent in args.agents.split(","):
        for backend in args.backends.split(","):
            llm = EngineChatModel(engine, EMBEDDED_MODEL_ID, constrained=backend == "constrained")
            gate = asyncio.Semaphore(args.concurrency)

            async def one(task):
                async with gate:
                    run = await runtime.start(f"agentd-{agent}", [{"role": "user", "content": task["request"]}], llm=llm)
                    steps = [s async for s in run]
                    return score(task, steps, tools)

            started = time.perf_counter()
            results = await asyncio.gather(*(one(task) for task in tasks))
            elapsed = time.perf_counter() - started
            attempts = sum(r["attempts"] for r in results)
            rows.append((agent, backend, sum(r["solved"] for r in results) / len(results),
                         sum(r["valid_calls"] for r in results) / attempts if attempts else float("nan"),
                         attempts / len(results), elapsed / len(results)))
            print(f"{agent:8} {backend:13} solved {rows[-1][2]:6.1%}  schema-valid {rows[-1][3]:6.1%}  "
                  f"steps {rows[-1][4]:.2f}  ({elapsed:.0f} s)", flush=True)
    await runtime.close()
    await models.close()
    print(f"\n{len(tasks)} tasks, embedded {EMBEDDED_MODEL_ID}, max {args.max_steps} steps per run\n")
    print("| agent | decoding | solved | schema-valid tool calls | steps per request | s per request (x{} concurrent) |"
          .format(args.concurrency))
    print("|---|---|---|---|---|---|")
    for agent, backend, solved, valid, steps, seconds in rows:
        shown = "–" if valid != valid else f"{valid:.0%}"  # NaN: no call was ever attempted
        print(f"| agentd-{agent} | {backend} | {solved:.0%} | {shown} | {steps:.2f} | {seconds:.1f} |")
    by_config = {(agent, backend): row for agent, backend, *row in rows}
    for agent in args.agents.split(","):
        pair = by_config.get((agent, "constrained")), by_config.get((agent, "unconstrained"))
        if all(pair):
            print(f"agentd-{agent}: constrained − unconstrained: solved {pair[0][0] - pair[1][0]:+.0%}, "
                  f"schema-valid {(pair[0][1] if pair[0][1] == pair[0][1] else 0) - (pair[1][1] if pair[1][1] == pair[1][1] else 0):+.0%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="react,rewoo,planner")
    parser.add_argument("--backends", default="constrained,unconstrained")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--every", type=int, default=1, help="take every k-th task (a sample across all kinds)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
