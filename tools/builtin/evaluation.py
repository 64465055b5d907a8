"""`evaluate`, `compare_models`, `leaderboard`: evaluation runs as tools an agent can call.

`evaluate` and `compare_models` submit a durable evaluation job through the jobs service (the
same one the CLI and the Evals API create) and, while they wait, report the samples done as
progress; the job keeps running if the wait runs out. Scores come with their standard errors,
and a comparison says when a difference is within noise, so an agent does not over-read a
small sample.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from agentd.jobs.evaluate import EvaluationRequestError, format_metric, leaderboard_of, results_path, task_result
from evaluation.tasks import builtin_tasks
from tools.base import ToolError
from tools.builtin.choices import FewShot, SampleLimit, Wait
from tools.builtin.data_files import local_data_path
from tools.builtin.model_names import resolve_if_known, served_by_jobs
from tools.context import ToolContext
from tools.decorator import Toolkit, tool
from tools.schema import one_of_names

if TYPE_CHECKING:
    from agentd.jobs import Job
    from agentd.jobs.service import JobService

MAX_WAIT_S = 12 * 3600
_TIMEOUT_S = MAX_WAIT_S + 600  # the longest wait plus loading every task before it

# A task is a built-in one's name or a task file's path: an agent passes the names its conversation said,
# and these words for them.
TASKS_SAID_AS = {"support_qa": ["support questions", "support question"], "mmlu_subset": ["mmlu"]}
TaskName = Annotated[str, one_of_names(builtin_tasks(), said=TASKS_SAID_AS, or_path=True)]
Tasks = Annotated[list[TaskName], Field(min_length=1, max_length=20)]
MaxWait = Annotated[float, Field(ge=0, le=MAX_WAIT_S)]


class EvaluationTools(Toolkit):
    """The jobs service's evaluation tools; the service belongs to whoever made it."""

    def __init__(self, service: JobService, poll_s: float = 1.0):
        self.service, self.poll_s = service, poll_s

    @tool(long_running=True, timeout=_TIMEOUT_S)
    async def evaluate(self, model: str, tasks: Tasks, ctx: ToolContext, limit: SampleLimit = None,
                       num_fewshot: FewShot = None, wait: Wait = True,
                       max_wait_s: MaxWait = 1800.0) -> dict:
        """Evaluate a served model on benchmark tasks; each score comes with its standard error.

        Args:
            model: a served model: its id (a fine-tune `ft:...` or an agent model too) or a name such as smollm2 or "base".
            tasks: built-in task names (arc_easy, arc_challenge, hellaswag, piqa, boolq, sciq, mmlu_subset, ...) or task files.
            limit: score only the first N samples of each task (faster, wider error bars).
            num_fewshot: examples shown before each question (default: the task's own).
            wait: wait for the run to end, reporting progress; false returns the job id at once.
            max_wait_s: the longest to wait before returning (the run keeps going).
        """
        job = await self._create([self._resolve(model)], tasks, limit, num_fewshot)
        if not wait:
            return _summary(job)
        job = await self._follow(job, ctx, max_wait_s)
        return _summary(job, max_wait_s)

    @tool(long_running=True, timeout=_TIMEOUT_S)
    async def compare_models(self, model_a: str, model_b: str, tasks: Tasks, ctx: ToolContext,
                             limit: SampleLimit = None, max_wait_s: MaxWait = 3600.0) -> dict:
        """Evaluate two served models on the same tasks and say, per task, which scored higher and
        whether the difference is larger than noise.

        Args:
            model_a: the first model's id (say, the base model).
            model_b: the second model's id (say, its fine-tune).
            tasks: built-in task names or task files, as for `evaluate`.
            limit: score only the first N samples of each task.
            max_wait_s: the longest to wait before returning (the run keeps going).
        """
        model_a, model_b = self._resolve(model_a), self._resolve(model_b)
        if model_a == model_b:
            raise ToolError(f"model_a and model_b are the same model ({model_a}); name two different ones")
        job = await self._create([model_a, model_b], tasks, limit, None)
        job = await self._follow(job, ctx, max_wait_s)
        if job.status != "succeeded":
            return _summary(job, max_wait_s)
        ids = [target["id"] for target in job.params["models"]]
        comparisons = [_comparison(comparison, ids) for comparison in compare_pairs(job)]
        return {"job_id": job.id, "model_a": ids[0], "model_b": ids[1], "comparisons": comparisons}

    @tool(changing=True)
    async def leaderboard(self) -> str:
        """Every model × task evaluated here so far, best first, as a markdown table."""
        board = await asyncio.to_thread(leaderboard_of, results_path(self.service.data_dir))
        return board.markdown() if board is not None else "Nothing has been evaluated yet."

    def _resolve(self, model: str) -> str:
        return resolve_if_known(model, served_by_jobs(self.service))

    async def _create(self, models: list[str], tasks: list[str], limit: int | None, num_fewshot: int | None) -> Job:
        return await start_evaluation(self.service, models, [workspace_task(task) for task in tasks], limit, num_fewshot)

    async def _follow(self, job: Job, ctx: ToolContext, max_wait_s: float) -> Job:
        job = await follow_evaluation(self.service, job, ctx, time.monotonic() + max_wait_s, self.poll_s)
        if job.status == "failed":
            raise ToolError(f"evaluation job {job.id} failed: {(job.error or {}).get('message')}")
        return job


def workspace_task(spec: str) -> str:
    """A built-in task's name as it is; a task file only from the server's working directory or its
    examples folder (as training files), resolved: whoever can reach the tools cannot have the
    server read, score and hand back the rows of any file on the machine."""
    given = Path(spec).expanduser()
    if spec in builtin_tasks() or not (given.suffix or "/" in spec or given.exists()):
        return spec  # a name: an unknown one is refused by the service with the names it knows
    return str(local_data_path(spec, kind="task files", instead="a built-in name or a path"))


async def start_evaluation(service: JobService, models: list[str], tasks: list[str], limit: int | None = None,
                           num_fewshot: int | None = None) -> Job:
    """A queued evaluation job of every model on every task; ToolError naming what is wrong."""
    config = {key: value for key, value in (("limit", limit), ("num_fewshot", num_fewshot)) if value is not None}
    try:
        return await service.create_evaluation(models=models, tasks=tasks, config=config)
    except EvaluationRequestError as error:
        raise ToolError(f"{error.param}: {error}" if error.param else str(error)) from None


async def follow_evaluation(service: JobService, job: Job, ctx: ToolContext, deadline: float, poll_s: float,
                            **extra: Any) -> Job:
    """The job once it ends or `deadline` (monotonic) passes, reporting samples done (with `extra`)."""
    last = None
    while True:
        job = service.get(job.id)
        progress = {key: job.progress.get(key) for key in ("done", "total", "model", "task")}
        if job.progress and progress != last:
            last = progress
            ctx.report_progress(**extra, job_id=job.id, **progress)
        if job.finished or time.monotonic() > deadline:
            return job
        await asyncio.sleep(poll_s)


def compare_pairs(job: Job) -> list[Any]:
    """`reports.compare` of the job's second model against its first, per task both finished."""
    from evaluation.reports import compare

    results = [task_result(entry) for entry in job.result["results"]]
    ids = [target["id"] for target in job.params["models"]]
    by_key = {(result.model, result.task): result for result in results}
    comparisons = []
    for task in dict.fromkeys(result.task for result in results):
        first, second = by_key.get((ids[0], task)), by_key.get((ids[1], task))
        if first is not None and second is not None:
            comparisons.append(compare(first, second))
    return comparisons


def _summary(job: Job, max_wait_s: float | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = {"job_id": job.id, "status": job.status,
                               "models": [target["id"] for target in job.params["models"]]}
    if job.progress and not job.finished:
        summary["progress"] = job.progress
    if job.result:
        summary["results"] = [
            {"model": entry["model"], "task": entry["task"], "samples": entry["samples"],
             "unparsed": entry["unparsed"],
             "scores": {name: format_metric(value) for name, value in entry["metrics"].items()}}
            for entry in job.result["results"]]
    if not job.finished and max_wait_s is not None:
        summary["note"] = (f"the run is still {job.status} after waiting {max_wait_s:g} s and keeps going; "
                           f"follow it with job_status(job_id=\"{job.id}\")")
    return summary


def _comparison(comparison: Any, ids: list[str]) -> dict[str, Any]:
    """One task's comparison as an agent reads it: the headline metric (the first difference beyond
    noise, else the first metric), both scores, and which model is ahead, by id."""
    deltas = comparison.deltas
    if not deltas:
        return {"task": comparison.task, "note": comparison.note}
    headline = next((d for d in deltas if d.within_noise is False), deltas[0])
    if headline.better is not None:
        better = ids[0] if headline.better == "a" else ids[1]
    else:  # within noise (or no error bars): still say which scored higher, and that it may be noise
        better = None if headline.a == headline.b else (ids[1] if headline.b > headline.a else ids[0])
    row = {"task": comparison.task, "metric": headline.metric, "a": round(headline.a, 4), "b": round(headline.b, 4),
           "difference": round(headline.b - headline.a, 4), "better": better,
           "significant": headline.within_noise is False}
    if comparison.note:
        row["note"] = comparison.note
    return row