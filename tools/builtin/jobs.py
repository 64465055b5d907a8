"""`finetune`, `list_jobs`, `job_status`: fine-tuning jobs as tools an agent can call.

`finetune` submits a durable job through the jobs service (the same one `/v1/fine_tuning/jobs`
creates) and, when asked to wait, reports each training step as progress until the job ends or
`max_wait_s` passes; the job keeps running either way.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from agentd.jobs import JobNotFound
from tools.base import ToolError
from tools.builtin.choices import Epochs, MaxSteps, Method, Wait
from tools.builtin.data_files import training_file_id
from tools.builtin.model_names import resolve_if_known, served_by_jobs
from tools.context import ToolContext
from tools.decorator import Toolkit, tool
from tools.schema import id_of, path_or_id, said_as

if TYPE_CHECKING:
    from agentd.jobs import Job
    from agentd.jobs.service import JobService

MAX_WAIT_S = 12 * 3600
# The tool's own limit covers the longest wait plus checking the file before it.
_TIMEOUT_S = MAX_WAIT_S + 600
# "auto": chosen by the jobs service from the data set's size, as OpenAI does.
BatchSize = Annotated[int, Field(ge=1, le=1024)] | Literal["auto"]
JobStatus = Annotated[Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"], said_as(
    validating_files=["validating"], queued=["waiting", "pending", "queue"],
    running=["in progress", "active", "still going", "unfinished"],
    succeeded=["finished", "done", "completed", "complete", "successful", "succeed"],
    failed=["fail", "failure", "failures", "broke", "errored", "crashed"], cancelled=["canceled", "cancel"])]
_STEP_KEYS = ("step", "total_steps", "loss", "eta_seconds")


class JobTools(Toolkit):
    """The jobs service's tools; the service (and its store) belongs to whoever made it."""

    def __init__(self, service: JobService, poll_s: float = 1.0):
        self.service, self.poll_s = service, poll_s

    @tool(long_running=True, timeout=_TIMEOUT_S)
    async def finetune(self, model: str, training_file: Annotated[str, path_or_id("file")], ctx: ToolContext,
                       method: Method = "lora",
                       epochs: Epochs = "auto",
                       max_steps: MaxSteps = None,
                       learning_rate: Annotated[float | None, Field(gt=0, lt=1)] = None,
                       wait: Wait = True,
                       max_wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT_S)] = 1800.0,
                       batch_size: BatchSize = "auto") -> dict:
        """Fine-tune a served model on a JSONL file; the result is a new model id to chat with.

        Args:
            model: the served model to start from (its id, or a name such as smollm2 or "base").
            training_file: the training data (chat messages, ShareGPT, Alpaca or text JSONL): a file id (file-...) or a JSONL path.
            method: lora (small adapter, fast), qlora (4-bit, needs a GPU) or full (every weight).
            epochs: passes over the data, or auto (chosen from the data set's size).
            max_steps: stop after this many optimizer steps (overrides epochs).
            learning_rate: the peak learning rate (default depends on the method).
            wait: wait for the job to end, reporting progress; false returns the job id at once.
            max_wait_s: the longest to wait before returning (the job keeps running).
            batch_size: examples per optimizer step, or auto (chosen from the data set's size).
        """
        deadline = time.monotonic() + max_wait_s
        model = resolve_if_known(model, served_by_jobs(self.service))
        file_id = await asyncio.to_thread(training_file_id, training_file, self.service.file_store)
        hyperparameters: dict[str, Any] = {"method": method, "n_epochs": epochs, "batch_size": batch_size}
        if max_steps:
            hyperparameters["max_steps"] = max_steps
        if learning_rate:
            hyperparameters["learning_rate"] = learning_rate
        job = await start_fine_tune(self.service, model, file_id, hyperparameters)
        if not wait:
            return _summary(job)
        job = await follow_fine_tune(self.service, job, ctx, deadline, self.poll_s)
        if job.status == "failed":
            raise ToolError(f"fine-tuning job {job.id} failed: {(job.error or {}).get('message')}")
        summary = _summary(job)
        if not job.finished:
            summary["note"] = (f"the job is still {job.status} after waiting {max_wait_s:g} s and keeps running; "
                               f"follow it with job_status(job_id=\"{job.id}\")")
        return summary

    @tool(changing=True)
    def list_jobs(self, status: JobStatus | None = None,
                  limit: Annotated[int, Field(ge=1, le=100)] = 10) -> list[dict]:
        """List fine-tuning jobs, newest first.

        Args:
            status: only jobs in this status.
            limit: how many jobs to list.
        """
        return [_summary(job) for job in self.service.list(statuses=(status,) if status else (), limit=limit)]

    @tool(changing=True)
    def job_status(self, job_id: Annotated[str, id_of("ftjob", "evaljob")]) -> dict:
        """The status, progress, result or error of one job.

        Args:
            job_id: the job id (ftjob-... or evaljob-...).
        """
        try:
            return _summary(self.service.get(job_id))
        except JobNotFound as error:
            raise ToolError(str(error)) from None


async def start_fine_tune(service: JobService, model: str, training_file: str,
                          hyperparameters: dict[str, Any]) -> Job:
    """A fine-tune job whose files are checked (queued, or failed saying why); ToolError for a bad request."""
    from agentd.jobs.fine_tune import FineTuneRequestError

    try:
        job = await service.create_fine_tune(model=model, training_file=training_file,
                                             hyperparameters=hyperparameters)
    except FineTuneRequestError as error:
        raise ToolError(str(error)) from None
    return await service.validated(job.id)


async def follow_fine_tune(service: JobService, job: Job, ctx: ToolContext, deadline: float, poll_s: float,
                           **extra: Any) -> Job:
    """The job once it ends or `deadline` (monotonic) passes, reporting each new step (with `extra`)."""
    last_step = None
    while True:
        job = service.get(job.id)
        step = job.progress.get("step")
        if step is not None and step != last_step:
            last_step = step
            ctx.report_progress(**extra, job_id=job.id, **{k: job.progress[k] for k in _STEP_KEYS if k in job.progress})
        if job.finished or time.monotonic() > deadline:
            return job
        await asyncio.sleep(poll_s)


def _summary(job) -> dict:
    summary: dict[str, Any] = {"job_id": job.id, "kind": job.kind, "status": job.status}
    if job.kind == "evaluation":
        summary["models"] = [model.get("id") for model in job.params.get("models", [])]
    else:
        summary["model"] = job.params.get("model")
    if job.progress and not job.finished:
        summary["progress"] = job.progress
    if job.result and job.kind == "evaluation":
        from agentd.jobs.evaluate import format_metric

        summary["results"] = [
            {"model": r["model"], "task": r["task"],
             "metrics": {name: format_metric(m) for name, m in r["metrics"].items()}}
            for r in job.result.get("results", [])]
    elif job.result:
        summary.update({key: job.result.get(key) for key in ("fine_tuned_model", "final_loss", "steps")})
    if job.error:
        summary["error"] = job.error.get("message")
    return summary
