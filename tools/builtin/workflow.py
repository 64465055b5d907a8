"""`tune_and_evaluate`: fine-tune → evaluate the base and the tuned model on the same tasks →
compare → optionally deploy the better one, as one tool (the CLI's `agentd workflow` runs the same).

Each stage goes through the same services as its own tool (`finetune`, `compare_models`,
`deploy`), so the jobs are the ones `list_jobs` shows and the API serves. Progress updates carry
a `stage` key (fine-tune, evaluate, compare, deploy) so that a client can show where the run is.
Without `tasks`, a seeded fifth of the training file is held out and becomes the evaluation task.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from agentd.jobs.evaluate import EvaluationRequestError, check_tasks
from tools.base import ToolError
from tools.builtin.choices import MaxSteps, Method, SampleLimit
from tools.builtin.data_files import training_file_id
from tools.builtin.deployment import deployment_summary, follow_deployment
from tools.builtin.evaluation import TaskName, compare_pairs, follow_evaluation, start_evaluation
from tools.builtin.jobs import follow_fine_tune, start_fine_tune
from tools.builtin.model_names import resolve_if_known, served_by_jobs
from tools.builtin.verdict import Verdict, judge, results_table
from tools.builtin.workflow_data import hold_out
from tools.context import ToolContext
from tools.decorator import Toolkit, tool
from tools.schema import path_or_id, said_as

if TYPE_CHECKING:
    from agentd.deployments import DeploymentService
    from agentd.jobs import Job
    from agentd.jobs.service import JobService

MAX_WAIT_S = 12 * 3600
# Hyperparameters the jobs service chooses from the data set's size, as OpenAI's "auto" does.
AUTO_HYPERPARAMETERS = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}


class WorkflowTools(Toolkit):
    """The workflow over the jobs service and, for deploying, the deployments service."""

    def __init__(self, jobs: JobService, deployments: DeploymentService | None = None, poll_s: float = 1.0):
        self.jobs, self.deployments, self.poll_s = jobs, deployments, poll_s

    @tool(long_running=True, timeout=MAX_WAIT_S + 600)
    async def tune_and_evaluate(self, model: str, training_file: Annotated[str, path_or_id("file")], ctx: ToolContext,
                                tasks: Annotated[list[TaskName] | None, Field(max_length=20)] = None,
                                method: Method = "lora",
                                limit: SampleLimit = None,
                                deploy_better: Annotated[bool, said_as(
                                    true=["deploy", "deploys", "serve", "serving", "winner", "whichever wins"],
                                    surely={"true": ["deploy whichever", "deploy the better", "deploy the best",
                                                     "deploy the winner", "serve whichever", "serve the better",
                                                     "serve the best", "serve the winner"]})] = False,
                                max_wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT_S)] = 7200.0,
                                max_steps: MaxSteps = None) -> dict:
        """Fine-tune a model on a data file, evaluate the base and the tuned model on the same tasks, say which is better, and optionally deploy the better one.

        Args:
            model: the id of the served model to start from (say smollm2-135m-instruct).
            training_file: a file id (file-...) or the path of a JSONL file of training data.
            tasks: evaluation tasks (built-in names such as support_qa, or task files); none: a held-out part of the training file.
            method: lora (small adapter, fast), qlora (4-bit, needs a GPU) or full (every weight).
            limit: score only the first N samples of each task.
            deploy_better: deploy the better of the two models when done.
            max_wait_s: the longest to wait for each stage before returning (the jobs keep running).
            max_steps: stop training after this many optimizer steps (default: epochs chosen from the data's size).
        """
        if deploy_better and self.deployments is None:  # said now, not after an hour of training
            raise ToolError("stage deploy: deployments are not available here; run without deploy_better")
        base = resolve_if_known(model, served_by_jobs(self.jobs))
        file_id = await asyncio.to_thread(training_file_id, training_file, self.jobs.file_store)
        train_id, eval_tasks = file_id, list(tasks or [])
        if not eval_tasks:
            split = await asyncio.to_thread(hold_out, self.jobs.file_store, file_id, self.jobs.data_dir / "workflows")
            train_id, eval_tasks = split.train_file_id, [str(split.eval_path)]
            ctx.report_progress(stage="fine-tune", message=f"held out {split.eval_records} of "
                                f"{split.eval_records + split.train_records} records as the evaluation task "
                                f"{split.eval_path.stem}")
        await self._check_tasks(eval_tasks)  # a misspelt task fails now, not after the training

        outcome = _Outcome(base)
        hyperparameters = {"method": method, **AUTO_HYPERPARAMETERS} | ({"max_steps": max_steps} if max_steps else {})
        tuning = await self._fine_tune(base, train_id, hyperparameters, ctx, max_wait_s)
        outcome.fine_tune_job, outcome.hyperparameters = tuning.id, _chosen(tuning)
        if not tuning.finished:
            return outcome.unfinished("fine-tune", tuning, max_wait_s)
        outcome.tuned_model = tuned = tuning.result["fine_tuned_model"]

        evaluation = await self._evaluate([base, tuned], eval_tasks, limit, ctx, max_wait_s)
        outcome.evaluation_job = evaluation.id
        if not evaluation.finished:
            return outcome.unfinished("evaluate", evaluation, max_wait_s)

        verdict = judge(compare_pairs(evaluation), evaluation.result["results"], base, tuned)
        for line in verdict.lines:
            ctx.report_progress(stage="compare", **line)
        outcome.verdict = verdict
        if deploy_better:
            outcome.deployed = await self._deploy(verdict.better, ctx, max_wait_s)
        return outcome.answer()

    async def _check_tasks(self, tasks: list[str]) -> None:
        try:
            await asyncio.to_thread(check_tasks, tasks)
        except EvaluationRequestError as error:
            raise ToolError(f"stage evaluate: {error.param}: {error}" if error.param else f"stage evaluate: {error}") \
                from None

    async def _fine_tune(self, base: str, train_id: str, hyperparameters: dict[str, Any], ctx: ToolContext,
                         max_wait_s: float) -> Job:
        deadline = time.monotonic() + max_wait_s
        try:
            job = await start_fine_tune(self.jobs, base, train_id, hyperparameters)
        except ToolError as error:
            raise ToolError(f"stage fine-tune: {error}") from None
        ctx.report_progress(stage="fine-tune", job_id=job.id, status=job.status, model=base, **_chosen(job))
        job = await follow_fine_tune(self.jobs, job, ctx, deadline, self.poll_s, stage="fine-tune")
        if job.status != "succeeded" and job.finished:
            raise ToolError(f"stage fine-tune: job {job.id} {job.status}: {(job.error or {}).get('message')}")
        if job.finished:
            ctx.report_progress(stage="fine-tune", job_id=job.id, status=job.status,
                                fine_tuned_model=job.result["fine_tuned_model"],
                                final_loss=job.result.get("final_loss"))
        return job

    async def _evaluate(self, models: list[str], tasks: list[str], limit: int | None, ctx: ToolContext,
                        max_wait_s: float) -> Job:
        deadline = time.monotonic() + max_wait_s
        try:
            job = await start_evaluation(self.jobs, models, tasks, limit)
        except ToolError as error:
            raise ToolError(f"stage evaluate: {error}") from None
        ctx.report_progress(stage="evaluate", job_id=job.id, status=job.status, models=models)
        job = await follow_evaluation(self.jobs, job, ctx, deadline, self.poll_s, stage="evaluate")
        if job.status != "succeeded" and job.finished:
            raise ToolError(f"stage evaluate: job {job.id} {job.status}: {(job.error or {}).get('message')}")
        return job

    async def _deploy(self, model: str, ctx: ToolContext, max_wait_s: float) -> dict[str, Any]:
        from agentd.deployments import DeploymentError

        deployments = self.deployments
        assert deployments is not None  # checked before the training
        try:
            deployment = await deployments.create(model=model)
        except DeploymentError as error:
            if getattr(error, "code", None) == "model_already_served":  # the base model, usually: nothing to do
                ctx.report_progress(stage="deploy", model=model, status="already_served")
                return {"model": model, "status": "already_served", "note": str(error)}
            raise ToolError(f"stage deploy: {error}") from None
        ctx.report_progress(stage="deploy", deployment_id=deployment.id, model=model, status=deployment.status)
        deployment = await follow_deployment(deployments, deployment, ctx, min(max_wait_s, 3600), stage="deploy")
        if deployment.status == "failed":
            raise ToolError(f"stage deploy: deployment {deployment.id} of {model} failed: {deployment.error}")
        return deployment_summary(deployment)


class _Outcome:
    """What the tool answers, filled in stage by stage."""

    def __init__(self, base: str):
        self.base, self.tuned_model = base, None
        self.fine_tune_job: str | None = None
        self.evaluation_job: str | None = None
        self.hyperparameters: dict[str, Any] = {}
        self.verdict: Verdict | None = None
        self.deployed: dict[str, Any] | None = None

    def answer(self, note: str | None = None) -> dict[str, Any]:
        verdict = self.verdict
        # The shape the tool-use adapter was trained to read (agentd/tool_use/model_scenarios.py):
        # per-task comparisons and the chosen hyperparameters went out as progress already.
        answer = {"base_model": self.base, "tuned_model": self.tuned_model,
                  "better": verdict.better if verdict else None,
                  "summary": verdict.summary if verdict else note,
                  "table": results_table(verdict) if verdict else "",
                  "fine_tune_job": self.fine_tune_job, "evaluation_job": self.evaluation_job,
                  "deployed": self.deployed}
        if note:
            answer["note"] = note
        return answer

    def unfinished(self, stage: str, job: Job, max_wait_s: float) -> dict[str, Any]:
        return self.answer(f"stage {stage}: job {job.id} is still {job.status} after waiting {max_wait_s:g} s and "
                           f"keeps running; follow it with job_status(job_id=\"{job.id}\") and run the rest again")


def _chosen(job: Job) -> dict[str, Any]:
    """The training settings the job will use ("auto" resolved), as the job records them."""
    from agentd.jobs.fine_tune import openai_hyperparameters

    training = job.params.get("training", {})
    # The numbers the job object and its events show (examples per update, the multiplier).
    return {**openai_hyperparameters(training), **({"max_steps": training["max_steps"]} if training.get("max_steps") else {})}

