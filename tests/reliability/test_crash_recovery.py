"""`kill -9` of the server (and of its job workers: the machine lost power) during a fine-tune and
during an evaluation run; a new server on the same data folder resumes both, the fine-tune from
its last checkpoint and the evaluation from its cached samples, and nothing recorded is lost.

The server is a real `agentd serve` process serving a tiny random model, so training and scoring
take seconds.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from agentd.jobs import open_store
from agentd.jobs.evaluate import results_path
from tests.fixtures.tickets import ticket_records
from tests.reliability.servers import Server, until, worker_pid

pytestmark = pytest.mark.timeout(600)


@pytest.fixture()
def server(tiny, tmp_path):
    running = Server(tmp_path, tiny).start()
    yield running
    running.stop()


def test_a_fine_tune_resumes_from_its_last_checkpoint_after_a_crash(server):
    client = server.client()
    data = "".join(json.dumps(record) + "\n" for record in ticket_records(40)).encode()
    uploaded = client.files.create(file=("tickets.jsonl", io.BytesIO(data)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny", training_file=uploaded.id, seed=7, hyperparameters={
        "n_epochs": 1, "batch_size": 2, "max_steps": 40, "checkpoint_every": 4, "learning_rate": 3e-3, "seq_len": 64})
    step = lambda: (client.fine_tuning.jobs.retrieve(job.id).model_extra["agentd"]["progress"] or {}).get("step", 0)  # noqa: E731
    until(lambda: step() >= 6, what="step 6")
    before = {event.id: event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=100).data}
    server.crash(worker_pid(server.data_dir, job.id))

    server.start()
    finished = until(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j,
                     what="the job to finish")
    assert finished.status == "succeeded", finished.error
    assert finished.model_extra["agentd"]["attempts"] == 2
    after = {event.id: event.message for event in client.fine_tuning.jobs.list_events(job.id, limit=200).data}
    assert before.items() <= after.items()  # every event recorded before the crash is still there
    assert any(message.startswith("resumed from checkpoint at step") for message in after.values())
    curve = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job.id}/metrics").json()["data"]
    assert [entry["step"] for entry in curve] == list(range(1, 41))  # resumed steps replace, never duplicate
    reply = client.chat.completions.create(model=finished.fine_tuned_model, max_tokens=2,
                                           messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content is not None


def stored_samples(data_dir: Path) -> int:
    with sqlite3.connect(results_path(data_dir)) as db:
        return db.execute("SELECT COUNT(*) FROM eval_samples").fetchone()[0]


def test_an_evaluation_run_resumes_from_its_cached_samples_after_a_crash(server):
    client = server.client()
    evaluation = client.evals.create(name="arc", data_source_config={
        "type": "custom", "item_schema": {"type": "object", "properties": {}}},
        testing_criteria=[{"type": "string_check", "name": "any", "operation": "eq", "input": "x", "reference": "x"}])
    # Batch 1: the run caches its samples every 64, so a crash loses at most the round it was in.
    run = client.evals.runs.create(evaluation.id, data_source={
        "type": "agentd_task", "task": "arc_easy", "model": "tiny", "limit": 400, "batch_size": 1})
    store = open_store(server.data_dir)
    try:
        [job] = until(lambda: [j for j in store.list(kind="evaluation") if j.progress.get("done", 0) >= 70],
                      what="70 samples")
    finally:
        store.close()
    server.crash(worker_pid(server.data_dir, job.id))
    cached = stored_samples(server.data_dir)
    assert 64 <= cached < 400

    server.start()
    done = until(lambda: (r := client.evals.runs.retrieve(run.id, eval_id=evaluation.id)).status
                 in ("completed", "failed", "canceled") and r, what="the run to end")
    assert done.status == "completed", done.error
    assert stored_samples(server.data_dir) == 400
    store = open_store(server.data_dir)
    try:
        [result] = store.get(job.id).result["results"]
    finally:
        store.close()
    assert result["samples"] == 400 and result["cached"] == cached  # what was scored before was not scored again
