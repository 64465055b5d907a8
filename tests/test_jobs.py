"""Durable jobs with real worker processes: kill -9 and resume, cancel, queueing, failures, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from agentd.jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, open_store
from agentd.jobs.fine_tune import submit, training_params, validate_files
from agentd.jobs.manager import JobManager


def queue_job(store, tiny, tickets, **hyperparameters):
    values = {"method": "full", "max_steps": 16, "checkpoint_every": 4, "learning_rate": 3e-3, "seq_len": 64,
              "batch_size": 2} | hyperparameters
    job = submit(store, model="tiny", training=training_params(tiny, [tickets], [], values, 7),
                 training_file=str(tickets))
    return job.id


async def wait_for(store, job_id, predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if predicate(job):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out; job is {store.get(job_id).status} at {store.get(job_id).progress}")


async def test_a_killed_worker_resumes_from_its_checkpoint_with_the_same_loss_curve(tiny, tickets, tmp_path):
    manager = JobManager(tmp_path, poll_s=0.1)
    await manager.start()
    store = manager.store
    reference = queue_job(store, tiny, tickets)
    await wait_for(store, reference, lambda job: job.finished)
    crashed = queue_job(store, tiny, tickets)
    job = await wait_for(store, crashed, lambda job: job.progress.get("step", 0) >= 6)
    os.kill(job.worker_pid, signal.SIGKILL)
    job = await wait_for(store, crashed, lambda job: job.finished)

    assert job.status == SUCCEEDED and job.attempts == 2, job.error
    messages = [event.message for event in store.events(crashed) if event.type == "message"]
    assert any("exited with code -9" in m for m in messages)
    assert any(m.startswith("resumed from checkpoint at step") for m in messages)
    losses = [entry["train_loss"] for entry in store.metrics(crashed)]
    assert len(losses) == 16
    assert losses == pytest.approx([entry["train_loss"] for entry in store.metrics(reference)], rel=1e-5)
    assert job.result["fine_tuned_model"].startswith("ft:tiny:agentd::")
    assert Path(job.result["model_dir"], "model.safetensors").is_file()
    await manager.close()


async def test_jobs_queue_behind_the_concurrency_limit_and_cancel(tiny, tickets, tmp_path):
    manager = JobManager(tmp_path, poll_s=0.1, max_concurrent=1)
    await manager.start()
    store = manager.store
    long_one = queue_job(store, tiny, tickets, max_steps=5000, checkpoint_every=1000)
    waiting = queue_job(store, tiny, tickets)
    await wait_for(store, long_one, lambda job: job.progress.get("step", 0) >= 2)
    assert store.get(waiting).status == QUEUED  # one at a time: the second waits its turn
    assert manager.cancel(waiting).status == CANCELLED
    manager.cancel(long_one)
    job = await wait_for(store, long_one, lambda job: job.finished, timeout=60)
    assert job.status == CANCELLED and job.progress["step"] < 5000
    assert [e.message for e in store.events(long_one)][-1] == "cancelled"
    assert store.checkpoints(long_one)  # stopping keeps what was learnt
    await manager.close()


async def test_failures_are_recorded_with_their_reason(tiny, tickets, tmp_path):
    store = open_store(tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    job = submit(store, model="tiny", training=training_params(tiny, [broken], [], {}, None),
                 training_file=str(broken), status="validating_files")
    validate_files(store, job.id)
    failed = store.get(job.id)
    assert failed.status == FAILED and "broken.jsonl line 1" in failed.error["message"]

    manager = JobManager(tmp_path, poll_s=0.1, store=store)
    await manager.start()
    qlora = queue_job(store, tiny, tickets, method="qlora")
    job = await wait_for(manager.store, qlora, lambda job: job.finished)
    assert job.status == FAILED and job.error["code"] == "TrainingError"
    assert "QLoRA needs a CUDA GPU" in job.error["message"]
    await manager.close()


def test_jobs_left_running_by_a_dead_server_go_back_to_the_queue(tiny, tickets, tmp_path):
    store = open_store(tmp_path)
    orphan = queue_job(store, tiny, tickets)
    assert store.claim(orphan) and not store.claim(orphan)  # exactly one claimant
    store.set_worker(orphan, 2**22 + 12345)  # a pid that is not running
    exhausted = queue_job(store, tiny, tickets)
    for _ in range(3):
        store.claim(exhausted)
        store.requeue(exhausted, "again")
    store.claim(exhausted)
    manager = JobManager(tmp_path, store=store, max_attempts=3)
    manager.recover()
    assert store.get(orphan).status == QUEUED
    assert "resumes from its last checkpoint" in store.events(orphan)[-1].message
    assert store.get(exhausted).status == FAILED and store.get(exhausted).error["code"] == "worker_died"
    assert store.get(orphan).status != RUNNING
