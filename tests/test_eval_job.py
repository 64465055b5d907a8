"""Evaluation as a durable job: real worker processes on the embedded model, the result cache
across an interruption, cancel, refusals, the model resolver, and GET /v1/leaderboard."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest

from agentd.config import Settings
from agentd.jobs import CANCELLED, FAILED, QUEUED, SUCCEEDED
from agentd.jobs.evaluate import EvaluationRequestError, ServedModels, local_target, results_path
from agentd.jobs.service import JobService
from agentd.server.app import create_app
from pipelines.registry import ModelSpec
from tests.conftest import DATA_DIR, MODEL, RunningServer

pytestmark = pytest.mark.timeout(600)


def embedded_target(model_id: str) -> dict:
    """The resolver a server would give: the embedded model's converted folder, nothing else."""
    if model_id != MODEL:
        raise EvaluationRequestError(f"model {model_id!r} is not served here", param="model")
    return local_target(ModelSpec(id=MODEL, kind="embedded"), DATA_DIR)


def eval_service(tmp_path) -> JobService:
    return JobService(tmp_path, model_target=embedded_target, poll_s=0.1)


async def wait_for(store, job_id, predicate, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if predicate(job):
            return job
        await asyncio.sleep(0.1)
    job = store.get(job_id)
    raise AssertionError(f"timed out; job is {job.status} at {job.progress} ({job.error})")


def stored_samples(data_dir) -> int:
    """Per-sample records in the result store, counted straight from SQLite."""
    with sqlite3.connect(results_path(data_dir)) as db:
        return db.execute("SELECT COUNT(*) FROM eval_samples").fetchone()[0]


async def test_a_job_scores_arc_easy_then_a_repeat_comes_from_the_cache(tmp_path):
    service = eval_service(tmp_path)
    await service.start()
    job = await service.create_evaluation(models=[MODEL], tasks=["arc_easy"], config={"limit": 8})
    assert job.id.startswith("evaljob-") and job.status == QUEUED and job.kind == "evaluation"
    assert job.params["models"][0]["type"] == "local" and "api_key" not in str(job.params)
    job = await wait_for(service.store, job.id, lambda j: j.finished)
    assert job.status == SUCCEEDED, job.error
    [result] = job.result["results"]
    assert (result["task"], result["model"], result["samples"], result["cached"]) == ("arc_easy", MODEL, 8, 0)
    acc = result["metrics"]["acc"]
    assert 0 <= acc["value"] <= 1 and acc["value"] * 8 == round(acc["value"] * 8)  # a share of 8 questions
    assert acc["stderr"] is not None and acc["stderr"] > 0 and "acc_norm" in result["metrics"]
    assert job.progress["done"] == job.progress["total"] == 8
    [event] = [e for e in service.store.events(job.id) if e.type == "metrics"]
    assert f"acc {acc['value']:.4f} ± {acc['stderr']:.4f}" in event.message
    assert event.data["metrics"]["acc"] == acc and event.data["task"] == "arc_easy"
    assert stored_samples(tmp_path) == 8

    again = await service.create_evaluation(models=[MODEL], tasks=["arc_easy"], config={"limit": 8})
    again = await wait_for(service.store, again.id, lambda j: j.finished)
    [repeat] = again.result["results"]
    assert again.status == SUCCEEDED and repeat["cached"] == 8 and repeat["metrics"] == result["metrics"]
    assert stored_samples(tmp_path) == 8
    await service.close()


async def test_a_shutdown_requeues_and_the_next_start_resumes_without_recomputing(tmp_path):
    service = eval_service(tmp_path)
    await service.start()
    job = await service.create_evaluation(models=[MODEL], tasks=["arc_easy"], config={"limit": 40, "batch_size": 1})
    await wait_for(service.store, job.id, lambda j: j.progress.get("done", 0) >= 8)
    await service.close()  # as a server stopping: the worker saves what finished and requeues
    store = JobService(tmp_path).store
    interrupted = store.get(job.id)
    assert interrupted.status == QUEUED, interrupted.status
    finished_before = stored_samples(tmp_path)
    assert 8 <= finished_before < 40
    store.close()

    service = eval_service(tmp_path)
    await service.start()
    job = await wait_for(service.store, job.id, lambda j: j.finished)
    [result] = job.result["results"]
    assert job.status == SUCCEEDED and job.attempts == 2, job.error
    assert result["samples"] == 40 and result["cached"] == finished_before
    assert stored_samples(tmp_path) == 40
    await service.close()


async def test_cancel_stops_a_running_evaluation(tmp_path):
    service = eval_service(tmp_path)
    await service.start()
    job = await service.create_evaluation(models=[MODEL], tasks=["arc_easy"], config={"limit": 400})
    await wait_for(service.store, job.id, lambda j: "done" in j.progress)  # the model is loaded, scoring starts
    service.cancel(job.id)
    job = await wait_for(service.store, job.id, lambda j: j.finished, timeout=120)
    assert job.status == CANCELLED and job.result is None
    assert stored_samples(tmp_path) <= 128  # it stopped after the round under way (512 requests: 128 questions)
    assert not [e for e in service.store.events(job.id) if e.type == "metrics"]
    await service.close()


async def test_bad_requests_are_refused_before_anything_queues(tmp_path):
    service = eval_service(tmp_path)
    cases = [
        (dict(models=[MODEL], tasks=["no_such_task"]), "tasks[0]"),
        (dict(models=[MODEL], tasks=["arc_easy", str(tmp_path / "missing.jsonl")]), "tasks[1]"),
        (dict(models=[MODEL], tasks=[]), "tasks"),
        (dict(models=["gpt-9"], tasks=["arc_easy"]), "model"),
        (dict(models=[], tasks=["arc_easy"]), "model"),
        (dict(models=["https://example.invalid/v1"], tasks=["arc_easy"]), "models[0]"),
        (dict(models=[MODEL], tasks=["arc_easy"], config={"limit": 0}), "config.limit"),
        (dict(models=[MODEL], tasks=["arc_easy"], config={"shots": 3}), "config.shots"),
        (dict(models=[MODEL], tasks=["arc_easy"], judge="gpt-9"), "judge"),
    ]
    for arguments, param in cases:
        with pytest.raises(EvaluationRequestError) as refused:
            await service.create_evaluation(**arguments)
        assert refused.value.param == param, (arguments, refused.value)
    assert "no_such_task" in str((await _refusal(service, tasks=["no_such_task"])))
    assert service.list() == []
    service.store.close()


async def _refusal(service, **arguments) -> EvaluationRequestError:
    with pytest.raises(EvaluationRequestError) as refused:
        await service.create_evaluation(models=[MODEL], **arguments)
    return refused.value


async def test_an_endpoint_that_fails_fails_the_job_with_the_reason(tmp_path):
    service = eval_service(tmp_path)
    await service.start()
    # A port nothing listens on: the endpoint model cannot answer, and the job says so.
    job = await service.create_evaluation(models=["http://127.0.0.1:9/v1#nothing"], tasks=["arc_easy"],
                                          config={"limit": 2})
    assert job.params["models"][0] == {"type": "endpoint", "id": "nothing", "base_url": "http://127.0.0.1:9/v1",
                                       "model": "nothing", "chat": False}
    job = await wait_for(service.store, job.id, lambda j: j.finished, timeout=120)
    assert job.status == FAILED and job.error["message"].startswith("http://127.0.0.1:9/v1: cannot reach"), job.error
    assert job.error["param"] == "model"
    assert "Traceback" not in job.error["message"]
    await service.close()


def test_the_server_resolver_maps_served_ids_to_local_weights_or_its_own_endpoint(tmp_path):
    folder = DATA_DIR / "models" / MODEL
    specs = {MODEL: ModelSpec(id=MODEL, kind="embedded"),
             "mine": ModelSpec(id="mine", kind="local", location=str(folder), adapter="/adapters/a"),
             "gpt-x": ModelSpec(id="gpt-x", kind="upstream", location="https://api.example.com/v1",
                                api_key="sk-secret")}
    fine_tunes = {"ft:mine:agentd::abc": ModelSpec(id="ft:mine:agentd::abc", kind="local", location=str(folder))}
    resolve = ServedModels(lambda: specs, data_dir=DATA_DIR, self_url=lambda: "http://127.0.0.1:4321/v1",
                           agents=lambda: ["agentd-react"], find_spec=fine_tunes.get, api_key_env="AGENTD_SELF_API_KEY")
    assert resolve(MODEL) == {"type": "local", "id": MODEL, "path": str(folder), "dtype": "auto"}
    assert resolve("mine")["adapter"] == "/adapters/a"
    assert resolve("ft:mine:agentd::abc")["path"] == str(folder)
    for served_elsewhere in ("gpt-x", "agentd-react"):
        target = resolve(served_elsewhere)
        assert target == {"type": "endpoint", "id": served_elsewhere, "base_url": "http://127.0.0.1:4321/v1",
                          "model": served_elsewhere, "chat": True, "api_key_env": "AGENTD_SELF_API_KEY"}
        assert "sk-secret" not in str(target)
    with pytest.raises(EvaluationRequestError, match="not served here") as unknown:
        resolve("gpt-9")
    assert unknown.value.param == "model"


def test_the_leaderboard_endpoint_in_every_format(registry, tmp_path):
    running = RunningServer(create_app(Settings(data_dir=tmp_path, api_keys=["k1"]), registry))
    try:
        headers = {"Authorization": "Bearer k1"}
        with httpx.Client(base_url=running.url, timeout=120) as http:
            assert http.get("/v1/leaderboard").status_code == 401
            empty = http.get("/v1/leaderboard", headers=headers)
            assert empty.status_code == 200 and empty.json()["data"] == []
            no_chart = http.get("/v1/leaderboard", params={"format": "png"}, headers=headers)
            assert no_chart.status_code == 404 and no_chart.json()["error"]["param"] == "format"

            jobs = running.app.state.jobs
            job = asyncio.run(jobs.create_evaluation(models=[MODEL], tasks=["arc_easy"], config={"limit": 4}))
            assert job.params["models"][0]["type"] == "local"
            deadline = time.monotonic() + 300
            while not jobs.get(job.id).finished and time.monotonic() < deadline:
                time.sleep(0.2)
            assert jobs.get(job.id).status == SUCCEEDED, jobs.get(job.id).error

            board = http.get("/v1/leaderboard", headers=headers)
            assert board.status_code == 200 and MODEL in board.text and "arc_easy" in board.text
            markdown = http.get("/v1/leaderboard", params={"format": "markdown"}, headers=headers)
            assert markdown.headers["content-type"].startswith("text/markdown") and "|" in markdown.text
            assert MODEL in markdown.text
            csv = http.get("/v1/leaderboard", params={"format": "csv"}, headers=headers)
            assert csv.headers["content-type"].startswith("text/csv") and "arc_easy" in csv.text
            png = http.get("/v1/leaderboard", params={"format": "png"}, headers=headers)
            assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
            bad = http.get("/v1/leaderboard", params={"format": "xml"}, headers=headers)
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "format"
            document = http.get("/openapi.json", headers=headers).json()
            assert "image/png" in document["paths"]["/v1/leaderboard"]["get"]["responses"]["200"]["content"]
            # An agent model resolves to this very server's /v1, on the port it really listens on.
            target = jobs.model_target("agentd-react")
            assert target["base_url"] == f"{running.url}/v1" and target["api_key_env"] == "AGENTD_SELF_API_KEY"
    finally:
        running.stop()


async def test_the_scoring_context_opens_judges_and_runs_code_in_the_sandbox(tiny):
    from agentd.jobs.evaluate import _Judges, execute_in_sandbox
    from evaluation.requests import EvaluationError, LoglikelihoodRequest

    judges = _Judges({"tiny": local_target(ModelSpec(id="tiny", kind="local", location=str(tiny)), DATA_DIR)})
    judge = await judges.open("tiny")
    assert await judges.open("") is judge  # "" asks for the run's configured judge
    [scored] = await judge.loglikelihood([LoglikelihoodRequest("The answer is", " yes")])
    assert scored.logprob < 0
    with pytest.raises(EvaluationError, match="judge model 'gpt-9' was not given") as unknown:
        await judges.open("gpt-9")
    assert unknown.value.param == "judge"
    await judges.close()

    assert await execute_in_sandbox("print(sum(range(5)))", 10) == (True, "10\n")
    passed, _ = await execute_in_sandbox("assert 1 + 1 == 3", 10)
    assert not passed
    timed_out, _ = await execute_in_sandbox("while True: pass", 1)
    assert not timed_out


def test_grades_of_the_runs_own_judge_are_cached_per_judge():
    """Samples are cached per task version: an llm_judge metric that takes the run's judge must
    not reuse grades another judge gave; a task naming its judge, or judging nothing, keeps its key."""
    from agentd.jobs.evaluate import tag_run_judge
    from evaluation.tasks import load_task

    rows = [{"question": "Why?", "answer": "Because."}]
    base = {"task": "judged", "doc_to_text": "question", "doc_to_target": "answer"}

    def version(metrics, judge):
        return tag_run_judge(load_task({"task": {**base, "metric_list": metrics}, "rows": rows}), judge).version

    assert version(["llm_judge"], "judge-a") != version(["llm_judge"], "judge-b")
    assert version(["llm_judge"], None) == load_task({"task": {**base, "metric_list": ["llm_judge"]},
                                                      "rows": rows}).version
    named = [{"metric": "llm_judge", "model": "strict"}]
    assert version(named, "judge-a") == version(named, "judge-b")
    assert version(["exact_match"], "judge-a") == version(["exact_match"], "judge-b")
