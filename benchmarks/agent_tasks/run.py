"""Agent competence: 141 plain-language requests over agentd's tools, scored without a model.

    .venv/bin/python benchmarks/agent_tasks/run.py [--agents react,rewoo,planner] [--adapter on|off|both]
        [--router on|off] [--backends constrained[,unconstrained]] [--engine transformers|openvino] [--limit N] [--every K]
        [--concurrency 8] [--max-steps 4]
        [--time-limit-s 3600] [--details runs.jsonl]

Every agent type runs every request in tasks.jsonl on the embedded SmolLM2-135M, with the
tool-use adapter (`--adapter on`), without it (`off`) or both, with constrained decoding (the
local default; `--backends constrained,unconstrained` adds the same prompts with the output
parsed as written). The requests cover arithmetic, code, the knowledge base, fine-tuning,
evaluation, comparison, deployment, jobs, vision, image generation, the tune-and-evaluate
workflow, chains whose later arguments come from earlier observations, and requests that need
no tool. score.py says what counts as solved.

The agents call the server's real tool registry. The job, evaluation, deployment and workflow
toolkits are the real ones, but they run against stand-in services (standins.py): a fine-tune
"succeeds" at once with a new `ft:` model id, an evaluation returns scores in the real result
shape, a deployment is ready at once. So the agent sees real observations without training
anything. Pictures the requests name (`{photo}`, `{face}`, `{scan}`) are real images uploaded to
the file store first; `{tickets}` is an uploaded JSONL training file; `{job}`, `{tuned}` and the
like are jobs, models and deployments made before the runs (world.py).

Prints, per agent and adapter: the share of requests solved, the share of tool-call attempts
that were schema-valid, the steps used and the seconds per request; then the share solved per
category of request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from agentd.agents.steps import AnswerDelta  # noqa: E402
from agentd.agents.runtime import AgentLimits, AgentRuntime  # noqa: E402
from agentd.llm.engine_chat import EngineChatModel  # noqa: E402
from pipelines.embedded import EMBEDDED_MODEL_ID  # noqa: E402
from pipelines.registry import ModelRegistry, ModelSpec  # noqa: E402
from agentd.tool_use import tool_router  # noqa: E402
from score import score  # noqa: E402
from world import World, prepare  # noqa: E402

DATA_DIR = REPO / ".agentd"


def load_tasks(every: int = 1, limit: int | None = None) -> list[dict]:
    """The benchmark's requests: every k-th line (a sample across all kinds), then the first `limit`."""
    lines = (HERE / "tasks.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()][::every][:limit]


def adapter_settings(choice: str) -> list[tuple[str, ModelSpec | None, frozenset[str]]]:
    """(label, model spec to think with or None for the plain embedded model, tools it knows) per
    adapter setting asked for; "on" is left out, with a note, while the adapter is not built yet."""
    settings: list[tuple[str, ModelSpec | None, frozenset[str]]] = []
    if choice in ("off", "both"):
        settings.append(("off", None, frozenset()))
    if choice in ("on", "both"):
        try:
            from agentd.tool_use import known_tools, manifest, tool_use_spec
        except ImportError as error:
            print(f"--adapter on skipped: agentd.tool_use cannot be imported ({error})", flush=True)
            return settings
        if manifest() is None:
            print("--adapter on skipped: the tool-use adapter is not built yet (agentd.tool_use.manifest() "
                  "is None; python -m agentd.tool_use.build makes it)", flush=True)
        else:
            settings.append(("on", tool_use_spec(), known_tools()))
    return settings


async def run_config(runtime: AgentRuntime, world: World, tasks: list[dict], agent: str, llm: EngineChatModel,
                     concurrency: int) -> tuple[list[dict], float]:
    """Every task once with one agent and chat model: the score rows and the seconds it all took."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(task: dict) -> dict:
        nonlocal done
        async with gate:
            began = time.perf_counter()
            request = world.fill(task["request"])
            run = await runtime.start(f"agentd-{agent}", [{"role": "user", "content": request}], llm=llm)
            steps = [step async for step in run]
            result = score(task, steps, world.tools, world.placeholders)
            done += 1  # a full run takes half an hour: say how far it is (the tables come at the end)
            print(f"  {agent} {done}/{len(tasks)} {task['id']} {'solved' if result['solved'] else 'failed'} "
                  f"({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
            return {**result, "id": task["id"], "category": task["category"], "request": request,
                    "steps": [step.to_dict() for step in steps if not isinstance(step, AnswerDelta)]}

    started = time.perf_counter()
    results = await asyncio.gather(*(one(task) for task in tasks))
    return list(results), time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    os.chdir(REPO)  # requests name files like examples/support_tickets.jsonl relative to the repository
    tasks = load_tasks(args.every, args.limit)
    settings = adapter_settings(args.adapter)
    if not settings:
        return
    specs = [ModelSpec(id=EMBEDDED_MODEL_ID, kind="embedded")] + [spec for _, spec, _ in settings if spec]
    models = ModelRegistry(specs, DATA_DIR, backend=args.engine)
    await models.load_all()
    work = Path(tempfile.mkdtemp(prefix="agent-tasks-"))
    world = await prepare(work)
    limits = AgentLimits(max_steps=args.max_steps, max_calls=1, time_limit_s=args.time_limit_s)
    runtime = AgentRuntime(world.tools, work / "state", limits=limits)
    await runtime.open()
    rows, by_category = [], {}
    details = open(args.details, "w") if args.details else None  # noqa: SIM115 (closed below)
    for agent in args.agents.split(","):
        for adapter, spec, known in settings:
            model_id = spec.id if spec else EMBEDDED_MODEL_ID
            world.jobs.also_served = [model_id] if spec else []  # what the server lists in this setting
            for backend in args.backends.split(","):
                llm = EngineChatModel(models.engines[model_id], model_id, constrained=backend == "constrained",
                                      known_tools=known, router=tool_router() if spec and args.router == "on" else None)
                results, elapsed = await run_config(runtime, world, tasks, agent, llm, args.concurrency)
                label = f"agentd-{agent}" + ("" if backend == "constrained" else f" ({backend})")
                rows.append(_row(label, adapter, results, elapsed))
                by_category[(label, adapter)] = _per_category(results)
                print(f"{label:30} adapter {adapter:3}  solved {rows[-1][2]:6.1%}  schema-valid "
                      f"{rows[-1][3]:6.1%}  steps {rows[-1][4]:.2f}  ({elapsed:.0f} s)", flush=True)
                for result in results if details else ():
                    details.write(json.dumps({"agent": label, "adapter": adapter, **result}, default=str) + "\n")
    if details:
        details.close()
    await runtime.close()
    await models.close()
    world.close()
    _print_tables(rows, by_category, len(tasks), args)


def _row(label: str, adapter: str, results: list[dict], elapsed: float) -> tuple:
    attempts = sum(r["attempts"] for r in results)
    return (label, adapter, sum(r["solved"] for r in results) / len(results),
            sum(r["valid_calls"] for r in results) / attempts if attempts else float("nan"),
            attempts / len(results), elapsed / len(results))


def _per_category(results: list[dict]) -> dict[str, tuple[int, int]]:
    counts: dict[str, tuple[int, int]] = {}
    for result in results:
        solved, total = counts.get(result["category"], (0, 0))
        counts[result["category"]] = (solved + result["solved"], total + 1)
    return counts


def _print_tables(rows: list[tuple], by_category: dict, n_tasks: int, args: argparse.Namespace) -> None:
    print(f"\n{n_tasks} requests, embedded {EMBEDDED_MODEL_ID}, max {args.max_steps} steps per run, "
          f"{args.concurrency} at a time\n")
    print("| agent | adapter | solved | schema-valid | steps | s/request |")
    print("|---|---|---|---|---|---|")
    for label, adapter, solved, valid, steps, seconds in rows:
        shown = "–" if valid != valid else f"{valid:.0%}"  # NaN: no call was ever attempted
        print(f"| {label} | {adapter} | {solved:.0%} | {shown} | {steps:.2f} | {seconds:.1f} |")
    configs = list(by_category)
    categories = list(dict.fromkeys(c for counts in by_category.values() for c in counts))
    print("\n| category | requests | " + " | ".join(f"{label}, adapter {adapter}" for label, adapter in configs) + " |")
    print("|---|---|" + "---|" * len(configs))
    for category in categories:
        total = next(counts[category][1] for counts in by_category.values() if category in counts)
        cells = [f"{by_category[c][category][0]}/{total}" for c in configs]
        print(f"| {category} | {total} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="react,rewoo,planner")
    parser.add_argument("--adapter", choices=("on", "off", "both"), default="both",
                        help="think with the tool-use adapter, without it, or both")
    parser.add_argument("--router", choices=("on", "off"), default="on",
                        help="with the adapter, narrow each run's first call by the tool router shipped with it")
    parser.add_argument("--backends", default="constrained", help="constrained and/or unconstrained decoding")
    parser.add_argument("--engine", choices=("transformers", "openvino"), default="transformers",
                        help="the engine the embedded model and its adapter run on")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--every", type=int, default=1, help="take every k-th task (a sample across all kinds)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=4)
    # Runs wait for each other on the one CPU engine: the server's 300 s would cut queued runs short.
    parser.add_argument("--time-limit-s", type=float, default=3600.0, help="per run, model time only")
    parser.add_argument("--details", default=None, help="write every run's steps and score here (JSON lines)")
    asyncio.run(main(parser.parse_args()))
