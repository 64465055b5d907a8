"""What an Evals API run computed, in OpenAI's shapes: result counts, usage, per-criterion results
and output items, read from the evaluation job's result and the per-sample result store.

Blocking (SQLite, tokenising): the routes call these in a thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentd.jobs import Job
from agentd.store.evals import EvalRecord, RunRecord

# An agentd_task run's item passes a metric when its per-sample value reaches this (acc and
# exact_match are 0 or 1; F1 and the like count as passed from half way up).
PASS_AT = 0.5


def _finished_result(job: Job | None) -> Any:
    from evaluation.results import TaskResult

    results = (job.result or {}).get("results") if job is not None else None
    return TaskResult.from_dict(results[0]) if results else None


def _records(app: Any, result: Any) -> list[dict[str, Any]]:
    from agentd.jobs.evaluate import results_path
    from evaluation.results import ResultStore, sample_records

    path = results_path(Path(app.state.settings.data_dir))
    if not path.exists():
        return []
    store = ResultStore(path)
    try:
        return sample_records(store, result)
    finally:
        store.close()


def _verdicts(run: RunRecord, score: dict[str, Any]) -> tuple[str, bool, list[dict[str, Any]]]:
    """(status pass/fail, errored, results) of one stored sample score."""
    metrics = score.get("metrics") or {}
    if "results" in metrics:  # an OpenAI eval task: its graders' results
        results = metrics["results"]
        return ("pass" if metrics.get("passed") else "fail"), bool(metrics.get("errored")), results
    results = [{"name": name, "type": "agentd_metric", "score": float(value), "passed": float(value) >= PASS_AT,
                "sample": None}
               for name, value in metrics.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    passed = bool(results) and results[0]["passed"]
    return ("pass" if passed else "fail"), False, results


def _usage_counter(app: Any, model: str):
    """Token counts with the model's own tokenizer when agentd serves it from weights; else None."""
    engine = getattr(app.state.registry, "engines", {}).get(model)
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is None:
        return None

    def count(messages: list[dict[str, str]], output: str) -> tuple[int, int]:
        try:
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) \
                if messages else ""
            return len(tokenizer.encode(prompt, add_special_tokens=False)), \
                len(tokenizer.encode(output, add_special_tokens=False))
        except Exception:  # noqa: BLE001 - usage is informative; a template quirk must not fail the listing
            return 0, 0

    return count


def run_summary(app: Any, record: EvalRecord, run: RunRecord, job: Job | None) -> dict[str, Any]:
    result = _finished_result(job)
    total = _expected_total(job)
    counts = {"total": total, "passed": 0, "failed": 0, "errored": 0}
    criteria: dict[str, dict[str, int]] = {}
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "invocation_count": 0}
    if result is None:
        return {"result_counts": counts, "per_model_usage": [], "per_testing_criteria_results": []}
    items = output_items(app, record, run, job, result=result)
    counts["total"] = result.samples
    for item in items:
        if item["agentd"]["errored"]:
            counts["errored"] += 1
        else:
            counts["passed" if item["status"] == "pass" else "failed"] += 1
        for entry in item["results"]:
            tally = criteria.setdefault(entry["name"], {"passed": 0, "failed": 0})
            tally["passed" if entry["passed"] else "failed"] += 1
        if item["sample"]["model"] and run.data_source.get("type") != "jsonl":
            usage["invocation_count"] += 1
            usage["prompt_tokens"] += item["sample"]["usage"]["prompt_tokens"]
            usage["completion_tokens"] += item["sample"]["usage"]["completion_tokens"]
    per_model = []
    if usage["invocation_count"]:
        per_model = [{"model_name": run.model, "cached_tokens": 0, **usage,
                      "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}]
    return {"result_counts": counts, "per_model_usage": per_model,
            "per_testing_criteria_results": [{"testing_criteria": name, **tally} for name, tally in criteria.items()],
            "metrics": {name: {"value": value.value, "stderr": value.stderr} for name, value in result.metrics.items()}}


def _expected_total(job: Job | None) -> int:
    """How many items the run has: its rows, or what the job's progress says (a built-in task)."""
    if job is None:
        return 0
    spec = (job.params.get("tasks") or [None])[0]
    if isinstance(spec, dict) and isinstance(spec.get("data_source"), dict):
        rows = (spec["data_source"].get("source") or {}).get("content")
        if isinstance(rows, list):
            return len(rows)
    return int(job.progress.get("total") or 0)


def output_items(app: Any, record: EvalRecord, run: RunRecord, job: Job | None, *,
                 result: Any = None) -> list[dict[str, Any]]:
    """One OpenAI output item per evaluated row, in data order (empty until the run has ended)."""
    result = result if result is not None else _finished_result(job)
    if result is None:
        return []
    records = _records(app, result)
    samples = {sample.id: sample for sample in _samples(job, result)}
    counter = _usage_counter(app, run.model) if run.data_source.get("type") != "jsonl" else None
    suffix = run.id.split("_", 1)[-1]
    items = []
    for stored in records:
        sample = samples.get(str(stored["sample_id"]))
        doc = sample.doc if sample is not None else {}
        status, errored, results = _verdicts(run, stored["score"])
        messages = doc.get("input") or ([{"role": "user", "content": stored["prompt"]}] if stored["prompt"] else [])
        given = doc.get("sample") if isinstance(doc.get("sample"), dict) else {}
        prompt_tokens, completion_tokens = counter(messages, stored["output"]) if counter else (0, 0)
        request = sample.requests[0] if sample is not None and sample.requests else None
        error = next((entry.get("error") for entry in results if entry.get("error")), None)
        items.append({
            "object": "eval.run.output_item", "id": f"outputitem_{suffix}_{stored['position']}",
            "run_id": run.id, "eval_id": record.id, "created_at": int(stored["created_at"]), "status": status,
            "datasource_item_id": int(stored["position"]),
            "datasource_item": doc.get("item", doc) if "item" in doc else doc,
            "results": results,
            "sample": {
                "input": [{"role": m["role"], "content": str(m["content"])} for m in messages],
                "output": [{"role": "assistant", "content": stored["output"]}],
                "model": run.model or str(given.get("model") or ""),
                "finish_reason": "stop" if request is not None else "",
                "max_completion_tokens": getattr(request, "max_tokens", 0) or 0,
                "temperature": getattr(request, "temperature", 0.0) or 0.0, "top_p": 1.0,
                "seed": getattr(request, "seed", None) or result.seed,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens, "cached_tokens": 0},
                "error": {"code": "grader_error", "message": error} if error else None,
            },
            "agentd": {"errored": errored, "sample_id": stored["sample_id"]},
        })
    return items


def _samples(job: Job | None, result: Any) -> list[Any]:
    """The run's samples rebuilt from the job's task spec (for the rows and the prompts sent)."""
    from evaluation.tasks import load_task

    if job is None or not job.params.get("tasks"):
        return []
    try:
        task = load_task(job.params["tasks"][0])
        return task.samples(limit=result.limit, num_fewshot=result.num_fewshot, seed=result.seed,
                            chat_template=result.chat_template)
    except Exception:  # noqa: BLE001 - a task that no longer loads still lists its stored outputs
        return []
