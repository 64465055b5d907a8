"""OpenAI's Evals API: evals (a data schema and testing criteria) and their runs, as evaluation jobs.

`client.evals.create / retrieve / update / list / delete`, `client.evals.runs.create / retrieve /
list / cancel / delete` and `client.evals.runs.output_items.list / retrieve` work unchanged.
A run is an evaluation job (`JobService.create_evaluation`) over one task built by
`evaluation.openai_evals` from the eval and the run's data source; its status comes from the
job, its per-item outputs and grades from the evaluation result store. Data sources: `jsonl`
(outputs given), `completions` (a model agentd serves answers), and agentd's own
`{"type": "agentd_task", "task": "arc_easy", "model": ..., "limit": 20}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict

from agentd.jobs import CANCELLED, FAILED, FINISHED, QUEUED, SUCCEEDED, VALIDATING, Job, JobNotFound
from agentd.server.errors import APIError
from agentd.store.evals import EvalNotFound, EvalRecord, EvalStore, RunNotFound, RunRecord
from evaluation.openai_evals import check_data_source, check_eval_config, rows_from_jsonl
from evaluation.requests import EvaluationError

# The model of a jsonl run: its rows carry the outputs (evaluation.openai_evals.GivenOutputs).
GIVEN_OUTPUTS = {"type": "given", "id": "given-outputs"}
_STATUS = {QUEUED: "queued", VALIDATING: "queued", SUCCEEDED: "completed", FAILED: "failed", CANCELLED: "canceled"}


class EvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    data_source_config: dict[str, Any]
    testing_criteria: list[Any]
    metadata: dict[str, str] | None = None


class EvalUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    metadata: dict[str, str] | None = None


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    data_source: dict[str, Any]
    metadata: dict[str, str] | None = None


def eval_router(data_dir: Path) -> APIRouter:
    """Routes at `/evals`; the eval records live in `<data_dir>/evaluation/evals.sqlite`."""
    holder: dict[str, EvalStore] = {}

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        holder["store"] = EvalStore(Path(data_dir) / "evaluation" / "evals.sqlite")
        try:
            yield
        finally:
            holder.pop("store").close()

    router = APIRouter(tags=["evals"], lifespan=lifespan)

    def store() -> EvalStore:
        return holder["store"]

    def get_eval(eval_id: str) -> EvalRecord:
        try:
            return store().get_eval(eval_id)
        except EvalNotFound as error:
            raise APIError(404, str(error), param="eval_id", code="eval_not_found") from None

    def get_run(eval_id: str, run_id: str) -> RunRecord:
        get_eval(eval_id)
        try:
            return store().get_run(eval_id, run_id)
        except RunNotFound as error:
            raise APIError(404, str(error), param="run_id", code="run_not_found") from None

    # -- evals ------------------------------------------------------------------------------

    @router.post("/evals")
    async def create_eval(body: EvalCreate, request: Request):
        try:
            config, criteria = check_eval_config(body.data_source_config, body.testing_criteria)
        except EvaluationError as error:
            raise APIError(400, error.message, param=error.param, code=error.code) from None
        await _check_judges(request, criteria)
        record = store().create_eval(name=body.name or "eval", data_source_config=config, testing_criteria=criteria,
                                     metadata=body.metadata)
        return eval_object(record)

    @router.get("/evals")
    async def list_evals(after: str | None = None, limit: int = Query(20, ge=1, le=100),
                         order: Literal["asc", "desc"] = "asc",
                         order_by: Literal["created_at", "updated_at"] = "created_at"):
        try:
            found = store().list_evals(after=after, limit=limit + 1, order=order, order_by=order_by)
        except EvalNotFound as error:
            raise APIError(404, str(error), param="after", code="eval_not_found") from None
        return _page([eval_object(record) for record in found], limit)

    @router.get("/evals/{eval_id}")
    async def retrieve_eval(eval_id: str):
        return eval_object(get_eval(eval_id))

    @router.post("/evals/{eval_id}")
    async def update_eval(eval_id: str, body: EvalUpdate):
        get_eval(eval_id)
        return eval_object(store().update_eval(eval_id, name=body.name, metadata=body.metadata))

    @router.delete("/evals/{eval_id}")
    async def delete_eval(eval_id: str, request: Request):
        get_eval(eval_id)
        for run in store().delete_eval(eval_id):
            _cancel_quietly(request, run.job_id)
        return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}

    # -- runs -------------------------------------------------------------------------------

    @router.post("/evals/{eval_id}/runs")
    async def create_run(eval_id: str, body: RunCreate, request: Request):
        record = get_eval(eval_id)
        config = eval_config(record)
        data_source = await _inline_file(request, body.data_source)
        try:
            checked = await asyncio.to_thread(check_data_source, data_source, config)
        except EvaluationError as error:
            raise APIError(400, error.message, param=error.param, code=error.code) from None
        kind = checked["type"]
        if kind == "agentd_task":
            models, model_param = [checked["model"]], "data_source.model"
            tasks: list[Any] = [checked["task"]]
            run_config = {key: checked[key] for key in ("limit", "num_fewshot", "seed", "batch_size")
                          if checked.get(key) is not None}
        else:
            models = [checked["model"]] if kind == "completions" else [dict(GIVEN_OUTPUTS)]
            model_param = "data_source.model"
            tasks = [{"type": "openai_eval", "eval": config, "data_source": checked}]
            run_config = {}
        judges = [spec["model"] for spec in record.testing_criteria if spec["type"] in ("label_model", "score_model")]
        # Runs evaluate what this server serves: a URL would make its workers call any address.
        for name, param in [(m, model_param) for m in models] + [(j, "testing_criteria.model") for j in judges]:
            if isinstance(name, str) and name.startswith(("http://", "https://")):
                raise APIError(400, f"{name!r}: an eval run uses models this server serves, not URLs "
                               "(serve the endpoint with --model ID=URL#model)", param=param)
        from agentd.jobs.evaluate import EvaluationRequestError

        try:
            job = await request.app.state.jobs.create_evaluation(
                models=models, tasks=tasks, config=run_config, judge=judges or None,
                metadata={"eval_id": eval_id})
        except EvaluationRequestError as error:
            param = {"model": model_param, "judge": "testing_criteria.model"}.get(error.param or "", error.param)
            if (error.param or "").startswith("tasks["):
                param = "data_source"
            raise APIError(400, error.message, param=param, code=error.code) from None
        run = store().create_run(eval_id=eval_id, name=body.name or f"{kind} run", job_id=job.id,
                                 model=checked.get("model") or "", data_source=body.data_source,
                                 metadata=body.metadata)
        return await _run_object(request, store(), record, run)

    @router.get("/evals/{eval_id}/runs")
    async def list_runs(eval_id: str, request: Request, after: str | None = None,
                        limit: int = Query(20, ge=1, le=100), order: Literal["asc", "desc"] = "asc",
                        status: Literal["queued", "in_progress", "completed", "canceled", "failed"] | None = None):
        record = get_eval(eval_id)
        try:
            runs = store().list_runs(eval_id, after=after, limit=1_000_000 if status else limit + 1, order=order)
        except RunNotFound as error:
            raise APIError(404, str(error), param="after", code="run_not_found") from None
        objects = [await _run_object(request, store(), record, run) for run in runs]
        if status:
            objects = [run for run in objects if run["status"] == status]
        return _page(objects, limit)

    @router.get("/evals/{eval_id}/runs/{run_id}")
    async def retrieve_run(eval_id: str, run_id: str, request: Request):
        return await _run_object(request, store(), get_eval(eval_id), get_run(eval_id, run_id))

    @router.post("/evals/{eval_id}/runs/{run_id}/cancel")
    async def cancel_run(eval_id: str, run_id: str, request: Request):
        run = get_run(eval_id, run_id)
        job = _job(request, run.job_id)
        if job is not None and job.status in FINISHED:
            raise APIError(400, f"run {run_id} already ended ({_STATUS[job.status]}); only queued or running runs "
                                "can be canceled", param="run_id", code="run_already_ended")
        _cancel_quietly(request, run.job_id)
        return await _run_object(request, store(), get_eval(eval_id), run)

    @router.delete("/evals/{eval_id}/runs/{run_id}")
    async def delete_run(eval_id: str, run_id: str, request: Request):
        run = get_run(eval_id, run_id)
        _cancel_quietly(request, run.job_id)
        store().delete_run(eval_id, run_id)
        return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}

    # -- output items -----------------------------------------------------------------------

    @router.get("/evals/{eval_id}/runs/{run_id}/output_items")
    async def list_output_items(eval_id: str, run_id: str, request: Request, after: str | None = None,
                                limit: int = Query(20, ge=1, le=100), order: Literal["asc", "desc"] = "asc",
                                status: Literal["fail", "pass"] | None = None):
        record, run = get_eval(eval_id), get_run(eval_id, run_id)
        items = await _output_items(request, record, run)
        if order == "desc":
            items.reverse()
        if status:
            items = [item for item in items if item["status"] == status]
        if after:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise APIError(404, f"no output item {after!r} in this run", param="after",
                               code="output_item_not_found")
            items = items[ids.index(after) + 1:]
        return _page(items, limit)

    @router.get("/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}")
    async def retrieve_output_item(eval_id: str, run_id: str, output_item_id: str, request: Request):
        record, run = get_eval(eval_id), get_run(eval_id, run_id)
        for item in await _output_items(request, record, run):
            if item["id"] == output_item_id:
                return item
        raise APIError(404, f"no output item {output_item_id!r} in this run", param="output_item_id",
                       code="output_item_not_found")

    return router


# -- shapes -----------------------------------------------------------------------------------------


def eval_config(record: EvalRecord) -> dict[str, Any]:
    """What a run's task is built from (evaluation.openai_evals)."""
    return {"id": record.id, "name": record.name, "data_source_config": record.data_source_config,
            "testing_criteria": record.testing_criteria}


def eval_object(record: EvalRecord) -> dict[str, Any]:
    return {"object": "eval", "id": record.id, "name": record.name, "created_at": int(record.created_at),
            "data_source_config": record.data_source_config, "testing_criteria": record.testing_criteria,
            "metadata": record.metadata or None}


def _page(data: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    page = data[:limit]
    return {"object": "list", "data": page, "has_more": len(data) > limit,
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}


async def _check_judges(request: Request, criteria: list[dict[str, Any]]) -> None:
    """A judge model that agentd does not serve is refused when the eval is created."""
    resolve = getattr(request.app.state.jobs, "model_target", None)
    if resolve is None:
        return
    for index, spec in enumerate(criteria):
        if spec["type"] not in ("label_model", "score_model"):
            continue
        try:
            await asyncio.to_thread(resolve, spec["model"])
        except ValueError as error:  # EvaluationRequestError is a ValueError
            raise APIError(400, f"testing_criteria[{index}].model: {getattr(error, 'message', error)}",
                           param=f"testing_criteria[{index}].model", code="model_not_found") from None


async def _inline_file(request: Request, data_source: dict[str, Any]) -> dict[str, Any]:
    """An uploaded file's rows put inline, so the job (and the library) never reads the file store."""
    source = data_source.get("source")
    if not isinstance(source, dict) or source.get("type") != "file_id":
        return data_source
    file_store = request.app.state.tools.context.file_store
    if file_store is None:
        raise APIError(400, "file uploads are not enabled on this server", param="data_source.source.id")
    from tools.files import FileNotFound

    try:
        text = (await asyncio.to_thread(file_store.read, str(source.get("id")))).decode("utf-8")
        rows = rows_from_jsonl(text)
    except FileNotFound as error:
        raise APIError(400, f"{error}; upload it with purpose 'evals' first", param="data_source.source.id",
                       code="file_not_found") from None
    except UnicodeDecodeError:
        raise APIError(400, "the file is not UTF-8 JSONL", param="data_source.source.id") from None
    except EvaluationError as error:
        raise APIError(400, error.message, param=error.param, code=error.code) from None
    return {**data_source, "source": {"type": "file_content", "content": rows}}


def _job(request: Request, job_id: str) -> Job | None:
    try:
        return request.app.state.jobs.get(job_id)
    except JobNotFound:
        return None


def _cancel_quietly(request: Request, job_id: str) -> None:
    job = _job(request, job_id)
    if job is not None and job.status not in FINISHED:
        request.app.state.jobs.cancel(job_id)


async def _run_object(request: Request, store: EvalStore, record: EvalRecord, run: RunRecord) -> dict[str, Any]:
    from agentd.server.eval_results import run_summary

    job = _job(request, run.job_id)
    status = "failed" if job is None else _STATUS.get(job.status, "in_progress")
    summary = run.summary
    if summary is None:
        summary = await asyncio.to_thread(run_summary, request.app, record, run, job)
        if job is not None and job.status in FINISHED:
            store.set_summary(run.id, summary)  # an ended run's counts never change: computed once
    error = None
    if job is not None and job.error:
        error = {"code": str(job.error.get("code") or "run_failed"), "message": str(job.error.get("message") or "")}
    elif job is None:
        error = {"code": "job_missing", "message": f"the evaluation job {run.job_id} of this run no longer exists"}
    base = str(request.base_url).rstrip("/")
    return {
        "object": "eval.run", "id": run.id, "eval_id": record.id, "name": run.name, "model": run.model,
        "status": status, "created_at": int(run.created_at), "data_source": run.data_source,
        "metadata": run.metadata or None, "error": error,
        "result_counts": summary["result_counts"], "per_model_usage": summary["per_model_usage"],
        "per_testing_criteria_results": summary["per_testing_criteria_results"],
        "report_url": f"{base}/v1/evals/{record.id}/runs/{run.id}/output_items",
        "agentd": {"job_id": run.job_id, "progress": job.progress if job else {},
                   "metrics": summary.get("metrics", {})},
    }


async def _output_items(request: Request, record: EvalRecord, run: RunRecord) -> list[dict[str, Any]]:
    from agentd.server.eval_results import output_items

    return await asyncio.to_thread(output_items, request.app, record, run, _job(request, run.job_id))
