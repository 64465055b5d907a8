"""`finetune`, `list_jobs`, `job_status`: fine-tuning jobs as tools an agent can call.

`finetune` submits a durable job (the same one `/v1/fine_tuning/jobs` creates) and, when asked
to wait, reports each training step as progress until the job ends or `max_wait_s` passes;
the job keeps running either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from tools.base import ToolError
from tools.context import ToolContext
from tools.decorator import Toolkit, tool


class JobTools(Toolkit):
    def __init__(self, store, file_store, base_folder: Callable[[str], Path], poll_s: float = 1.0):
        """`base_folder(model_id)` gives a served model's weights folder or raises ValueError."""
        self.store, self.file_store, self.base_folder, self.poll_s = store, file_store, base_folder, poll_s

    @tool(long_running=True, timeout=24 * 3600)
    async def finetune(self, model: str, training_file: str, ctx: ToolContext,
                       method: Literal["lora", "qlora", "full"] = "lora",
                       epochs: Annotated[float, Field(gt=0, le=100)] = 3.0,
                       max_steps: Annotated[int | None, Field(ge=1)] = None,
                       learning_rate: Annotated[float | None, Field(gt=0, lt=1)] = None,
                       wait: bool = True,
                       max_wait_s: Annotated[float, Field(ge=0)] = 1800.0) -> dict:
        """Fine-tune a served model on an uploaded JSONL file; the result is a new model id to chat with.

        Args:
            model: the id of the served model to start from.
            training_file: the file id (file-...) of the training data (chat messages, ShareGPT, Alpaca or text JSONL).
            method: lora (small adapter, fast), qlora (4-bit, needs a GPU) or full (every weight).
            epochs: passes over the data.
            max_steps: stop after this many optimizer steps (overrides epochs).
            learning_rate: the peak learning rate (default depends on the method).
            wait: wait for the job to end, reporting progress; false returns the job id at once.
            max_wait_s: the longest to wait before returning (the job keeps running).
        """
        from agentd.jobs.fine_tune import FineTuneRequestError, create_job, validate_files

        try:
            folder = self.base_folder(model)
        except ValueError as error:
            raise ToolError(str(error)) from None
        hyperparameters: dict[str, Any] = {"method": method, "n_epochs": epochs}
        if max_steps:
            hyperparameters["max_steps"] = max_steps
        if learning_rate:
            hyperparameters["learning_rate"] = learning_rate
        try:
            job = create_job(self.store, self.file_store, model=model, base_folder=folder,
                             training_file=training_file, hyperparameters=hyperparameters)
        except FineTuneRequestError as error:
            raise ToolError(str(error)) from None
        await asyncio.to_thread(validate_files, self.store, job.id)
        if not wait:
            return _summary(self.store.get(job.id))
        deadline, last_step = time.monotonic() + max_wait_s, None
        while True:
            job = self.store.get(job.id)
            step = job.progress.get("step")
            if step is not None and step != last_step:
                last_step = step
                ctx.report_progress(job_id=job.id, **{k: job.progress[k] for k in
                                                      ("step", "total_steps", "loss", "eta_seconds")
                                                      if k in job.progress})
            if job.finished or time.monotonic() > deadline:
                break
            await asyncio.sleep(self.poll_s)
        if job.status == "failed":
            raise ToolError(f"fine-tuning job {job.id} failed: {(job.error or {}).get('message')}")
        return _summary(job)

    @tool
    def list_jobs(self, status: Literal["validating_files", "queued", "running", "succeeded", "failed",
                                        "cancelled"] | None = None,
                  limit: Annotated[int, Field(ge=1, le=100)] = 10) -> list[dict]:
        """List fine-tuning jobs, newest first.

        Args:
            status: only jobs in this status.
            limit: how many jobs to list.
        """
        return [_summary(job) for job in self.store.list(statuses=(status,) if status else (), limit=limit)]

    @tool
    def job_status(self, job_id: str) -> dict:
        """The status, progress, result or error of one job.

        Args:
            job_id: the job id (ftjob-...).
        """
        from agentd.jobs import JobNotFound

        try:
            return _summary(self.store.get(job_id))
        except JobNotFound as error:
            raise ToolError(str(error)) from None


def _summary(job) -> dict:
    summary: dict[str, Any] = {"job_id": job.id, "status": job.status, "model": job.params.get("model")}
    if job.progress and not job.finished:
        summary["progress"] = job.progress
    if job.result:
        summary.update({key: job.result.get(key) for key in ("fine_tuned_model", "final_loss", "steps")})
    if job.error:
        summary["error"] = job.error.get("message")
    return summary
