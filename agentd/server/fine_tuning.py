"""OpenAI's Fine-tuning API over the durable job store: create, list, retrieve, cancel, events, checkpoints.

Objects keep OpenAI's shapes and statuses; what agentd adds (progress, the training
configuration, attempts) rides in an extra `agentd` field that OpenAI clients ignore.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from agentd.jobs import FINISHED, Job, JobNotFound
from agentd.jobs.fine_tune import KIND, FineTuneRequestError, checkpoint_model_id, openai_hyperparameters
from agentd.server.errors import APIError


class SupervisedMethod(BaseModel):
    hyperparameters: dict[str, Any] | None = None


class FineTuneMethod(BaseModel):
    type: Literal["supervised"]
    supervised: SupervisedMethod | None = None


class FineTuneJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    method: FineTuneMethod | None = None
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None


def fine_tuning_routes(router: APIRouter) -> None:
    @router.post("/fine_tuning/jobs")
    async def create(body: FineTuneJobRequest, request: Request):
        if body.integrations:
            raise APIError(400, "integrations (Weights & Biases) are not supported", param="integrations")
        hyperparameters = {**(body.hyperparameters or {}),
                           **((body.method.supervised.hyperparameters or {})
                              if body.method and body.method.supervised else {})}
        try:
            job = await request.app.state.jobs.create_fine_tune(
                model=body.model, training_file=body.training_file, validation_file=body.validation_file,
                hyperparameters=hyperparameters, seed=body.seed, suffix=body.suffix, metadata=body.metadata)
        except FineTuneRequestError as error:
            raise APIError(400, str(error), param=error.param, code=error.code) from None
        return job_object(job)

    @router.get("/fine_tuning/jobs")
    async def list_jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)):
        try:
            jobs = request.app.state.jobs.list(kind=KIND, after=after, limit=limit + 1)
        except JobNotFound as error:
            raise APIError(404, str(error), param="after") from None
        return {"object": "list", "data": [job_object(job) for job in jobs[:limit]], "has_more": len(jobs) > limit}

    @router.get("/fine_tuning/jobs/{job_id}")
    async def retrieve(job_id: str, request: Request):
        return job_object(_job(request, job_id))

    @router.post("/fine_tuning/jobs/{job_id}/cancel")
    async def cancel(job_id: str, request: Request):
        job = _job(request, job_id)
        if job.status in FINISHED:
            raise APIError(400, f"job {job_id} already ended ({job.status}); only running or queued jobs can be "
                                "cancelled", param="job_id")
        return job_object(request.app.state.jobs.cancel(job_id))

    @router.get("/fine_tuning/jobs/{job_id}/events")
    async def events(job_id: str, request: Request, after: str | None = None,
                     limit: int = Query(20, ge=1, le=1000)):
        _job(request, job_id)
        cursor = _event_seq(after)
        found = request.app.state.jobs.store.events(job_id, after=cursor, limit=limit + 1, newest_first=True)
        data = [{"id": f"ftevent-{event.seq}", "object": "fine_tuning.job.event", "created_at": int(event.created_at),
                 "level": event.level, "message": event.message, "data": event.data, "type": event.type}
                for event in found[:limit]]
        return {"object": "list", "data": data, "has_more": len(found) > limit}

    @router.get("/fine_tuning/jobs/{job_id}/checkpoints")
    async def checkpoints(job_id: str, request: Request, after: str | None = None,
                          limit: int = Query(10, ge=1, le=100)):
        job = _job(request, job_id)
        found = request.app.state.jobs.store.checkpoints(job_id)
        data = [{"id": f"ftckpt-{job.id.rsplit('-', 1)[-1][:12]}-{entry['step']}",
                 "object": "fine_tuning.job.checkpoint", "created_at": int(entry["created_at"]),
                 "fine_tuning_job_id": job.id, "fine_tuned_model_checkpoint": checkpoint_model_id(job, entry["step"]),
                 "step_number": entry["step"], "metrics": _checkpoint_metrics(entry["metrics"])}
                for entry in found]
        if after:
            ids = [entry["id"] for entry in data]
            data = data[ids.index(after) + 1:] if after in ids else []
        page = data[:limit]
        return {"object": "list", "data": page, "has_more": len(data) > limit,
                "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}

    @router.get("/fine_tuning/jobs/{job_id}/metrics")
    async def metrics(job_id: str, request: Request):
        """agentd's own: the whole loss curve, one entry per step (for plots and the dashboard)."""
        _job(request, job_id)
        return {"object": "list", "data": request.app.state.jobs.store.metrics(job_id)}


def _job(request: Request, job_id: str) -> Job:
    try:
        job = request.app.state.jobs.get(job_id)
    except JobNotFound as error:
        raise APIError(404, str(error), param="job_id", code="fine_tuning_job_not_found") from None
    if job.kind != KIND:
        raise APIError(404, f"{job_id} is not a fine-tuning job", param="job_id", code="fine_tuning_job_not_found")
    return job


def _event_seq(after: str | None) -> int | None:
    if after is None:
        return None
    try:
        return int(after.removeprefix("ftevent-"))
    except ValueError:
        raise APIError(400, f"after must be an event id (ftevent-N); got {after!r}", param="after") from None


def _checkpoint_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {"step": metrics.get("step"), "train_loss": metrics.get("loss")}
    if metrics.get("valid_loss") is not None:
        out["valid_loss"] = metrics["valid_loss"]
    return out


def job_object(job: Job) -> dict[str, Any]:
    params, result, training = job.params, job.result or {}, job.params["training"]
    # The numbers training uses, "auto" ones resolved, as OpenAI shows them once the file is validated.
    hyperparameters = openai_hyperparameters(training)
    eta = job.progress.get("eta_seconds") if job.status == "running" else None
    return {
        "id": job.id, "object": "fine_tuning.job", "created_at": int(job.created_at),
        "error": job.error, "fine_tuned_model": result.get("fine_tuned_model"),
        "finished_at": int(job.finished_at) if job.finished_at else None,
        "hyperparameters": hyperparameters, "model": params["model"], "organization_id": "agentd",
        "result_files": result.get("result_files", []), "seed": training["seed"], "status": job.status,
        "trained_tokens": result.get("trained_tokens"), "training_file": params["training_file"],
        "validation_file": params.get("validation_file"),
        "estimated_finish": int(time.time() + eta) if eta is not None else None,
        "integrations": [], "metadata": job.metadata or None,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "agentd": {"progress": job.progress, "attempts": job.attempts,
                   # Which of `hyperparameters` were chosen automatically, and from how many examples.
                   "auto_hyperparameters": params.get("hyperparameters"),
                   "training": {k: v for k, v in training.items()
                                if k not in ("base_model", "train_files", "validation_files")},
                   **({"result": {k: result[k] for k in ("steps", "final_loss", "valid_loss") if k in result}}
                      if result else {})},
    }
