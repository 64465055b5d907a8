"""Durable jobs with real worker processes: kill -9 and resume, cancel, queueing, failures, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentd.jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, VALIDATING, jobs_root, open_store
from agentd.jobs.fine_tune import KIND, training_params
from agentd.jobs.manager import JobManager
from agentd.jobs.service import JobService

SMALL = {"method": "full", "max_steps": 16, "checkpoint_every": 4, "learning_rate": 3e-3, "seq_len": 64,
         "batch_size": 2}


def job_service(tmp_path, tiny, **options) -> JobService:
    return JobService(tmp_path, base_folder=lambda _: tiny, **{"poll_s": 0.1, **options})


async def queue_job(service, tickets, **hyperparameters) -> str:
    job = await service.create_fine_tune(model="tiny", training_file=tickets, hyperparameters=SMALL | hyperparameters,
                                         seed=7)
    return (await service.validated(job.id)).id


def record_job(store, tiny, data, status=QUEUED) -> str:
    """A job written straight into the store, as a server that died at that point would leave it."""
    training = training_params(tiny, [data], [], SMALL, 7, n_examples=40)
    return store.create(KIND, {"model": "tiny", "training": training, "training_file": str(data)},
                        status=status, prefix="ftjob").id


async def wait_for(store, job_id, predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if predicate(job):
            return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out; job is {store.get(job_id).status} at {store.get(job_id).progress}")


async def test_a_killed_worker_resumes_from_its_checkpoint_with_the_same_loss_curve(tiny, tickets, tmp_path):
    service = job_service(tmp_path, tiny)
    await service.start()
    store = service.store
    reference = await queue_job(service, tickets)
    await wait_for(store, reference, lambda job: job.finished)
    crashed = await queue_job(service, tickets)
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
    await service.close()


async def test_jobs_queue_behind_the_concurrency_limit_and_cancel(tiny, tickets, tmp_path):
    service = job_service(tmp_path, tiny, max_concurrent=1)
    await service.start()
    store = service.store
    long_one = await queue_job(service, tickets, max_steps=5000, checkpoint_every=1000)
    waiting = await queue_job(service, tickets)
    await wait_for(store, long_one, lambda job: job.progress.get("step", 0) >= 2)
    assert store.get(waiting).status == QUEUED  # one at a time: the second waits its turn
    assert service.cancel(waiting).status == CANCELLED
    service.cancel(long_one)
    job = await wait_for(store, long_one, lambda job: job.finished, timeout=60)
    assert job.status == CANCELLED and job.progress["step"] < 5000
    assert [e.message for e in store.events(long_one)][-1] == "cancelled"
    assert store.checkpoints(long_one)  # stopping keeps what was learnt
    await service.close()


async def test_failures_are_recorded_with_their_reason(tiny, tickets, tmp_path):
    service = job_service(tmp_path, tiny)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    failed = await service.validated((await service.create_fine_tune(model="tiny", training_file=broken)).id)
    assert failed.status == FAILED and "broken.jsonl line 1" in failed.error["message"]

    await service.start()
    qlora = await queue_job(service, tickets, method="qlora")
    job = await wait_for(service.store, qlora, lambda job: job.finished)
    assert job.status == FAILED and job.error["code"] == "TrainingError"
    assert "QLoRA needs a CUDA GPU" in job.error["message"]
    await service.close()


async def test_the_worker_runs_this_agentd_whatever_the_current_folder(tiny, tickets, tmp_path, monkeypatch):
    decoy = tmp_path / "project" / "agentd"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('another checkout, not the agentd that serves')\n")
    monkeypatch.chdir(decoy.parent)
    service = job_service(tmp_path / "data", tiny)
    await service.start()
    job = await wait_for(service.store, await queue_job(service, tickets, max_steps=4), lambda job: job.finished)
    assert job.status == SUCCEEDED, job.error
    await service.close()


def test_jobs_left_running_by_a_dead_server_go_back_to_the_queue(tiny, tickets, tmp_path):
    store = open_store(tmp_path)
    orphan = record_job(store, tiny, tickets)
    assert store.claim(orphan) and not store.claim(orphan)  # exactly one claimant
    store.set_worker(orphan, 2**22 + 12345)  # a pid that is not running
    exhausted = record_job(store, tiny, tickets)
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
    store.close()


def test_recovery_adopts_only_a_live_process_that_is_the_jobs_worker(tiny, tickets, tmp_path):
    """The OS reuses pids: a live process under a recorded pid may be anyone's."""
    store = open_store(tmp_path)
    reused, ours = record_job(store, tiny, tickets), record_job(store, tiny, tickets)
    unrelated = subprocess.Popen(["sleep", "60"])
    # Stands in for a worker that outlived its server: the same command line as a real one.
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "agentd.jobs.worker",
                                 str(tmp_path), ours])
    try:
        for job_id, process in ((reused, unrelated), (ours, survivor)):
            store.claim(job_id)
            store.set_worker(job_id, process.pid)
        manager = JobManager(tmp_path, store=store)
        manager.recover()
        assert store.get(reused).status == QUEUED and unrelated.poll() is None  # requeued, the sleep untouched
        assert store.get(ours).status == RUNNING and store.get(ours).worker_pid == survivor.pid
        survivor.kill()
        survivor.wait()
        manager.tick_reap()  # the adopted worker died without recording an end: back to the queue
        assert store.get(ours).status == QUEUED
    finally:
        for process in (unrelated, survivor):
            process.kill()
            process.wait()
        store.close()


async def test_nothing_launches_once_close_returns(tiny, tickets, tmp_path):
    service = job_service(tmp_path, tiny, max_concurrent=0)  # the queue held: nothing starts by itself
    await service.start()
    job_id = await queue_job(service, tickets)
    manager = service.manager
    await service.close()
    assert not manager.launch(job_id)
    store = open_store(tmp_path)
    assert store.get(job_id).status == QUEUED and store.get(job_id).worker_pid is None
    store.close()


async def test_jobs_left_validating_files_are_checked_again_at_start(tiny, tickets, tmp_path):
    store = open_store(tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "no output"}\n')
    good, bad = record_job(store, tiny, tickets, VALIDATING), record_job(store, tiny, broken, VALIDATING)
    store.close()

    service = job_service(tmp_path, tiny, max_concurrent=0)
    await service.start()
    assert (await service.validated(good)).status == QUEUED
    assert (await service.validated(bad)).status == FAILED
    assert "broken.jsonl line 1" in service.get(bad).error["message"]
    await service.close()


async def test_each_succeeded_job_is_offered_as_a_model_once_whoever_ran_it(tiny, tickets, tmp_path):
    store = open_store(tmp_path)

    def succeed(job_id: str) -> None:  # what a worker in another process records
        store.claim(job_id)
        store.finish(job_id, SUCCEEDED, result={"fine_tuned_model": f"ft:tiny:agentd::{job_id[6:14]}",
                                                "base_model_dir": str(tiny), "adapter_dir": "/adapter"})

    before = record_job(store, tiny, tickets)
    succeed(before)
    service = job_service(tmp_path, tiny, max_concurrent=0)
    offered, threads = [], set()

    def offer(spec) -> None:
        offered.append(spec)
        threads.add(threading.current_thread())

    service.on_new_model(offer)
    await service.start()
    assert [spec.id for spec in offered] == [f"ft:tiny:agentd::{before[6:14]}"]  # at start, from before

    later = record_job(store, tiny, tickets)
    succeed(later)
    await asyncio.sleep(0.5)  # a few ticks
    assert threads == {threading.current_thread()}  # hooks run on the event loop, not in the ticks' thread
    service.notice_finished()
    assert [spec.id for spec in offered] == [f"ft:tiny:agentd::{before[6:14]}", f"ft:tiny:agentd::{later[6:14]}"]
    assert offered[1].location == str(tiny) and offered[1].adapter == "/adapter"
    assert service.model_spec(offered[1].id) == offered[1]
    assert service.model_spec("ft:tiny:agentd::00000000") is None and service.model_spec("tiny") is None
    await service.close()
    store.close()


async def test_a_store_locked_by_another_process_does_not_freeze_the_event_loop(tiny, tickets, tmp_path):
    """The manager's claim waits out another writer (a worker, the CLI) in its own thread."""
    store = open_store(tmp_path)
    job_id = record_job(store, tiny, tickets)
    manager = JobManager(tmp_path, store=store, poll_s=0.05)
    writer = sqlite3.connect(jobs_root(tmp_path) / "jobs.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the write lock, held as a long transaction elsewhere would
    await manager.start()
    longest, last, until = 0.0, time.monotonic(), time.monotonic() + 1.5
    while last < until:
        await asyncio.sleep(0.02)
        longest, last = max(longest, time.monotonic() - last), time.monotonic()
    writer.execute("UPDATE jobs SET status = ? WHERE id = ?", (CANCELLED, job_id))  # so nothing launches
    writer.execute("COMMIT")
    writer.close()
    await manager.close()
    assert longest < 0.5, f"the event loop stood still for {longest:.1f} s"
    store = open_store(tmp_path)
    assert store.get(job_id).status == CANCELLED and store.get(job_id).worker_pid is None
    store.close()
