"""The job store locked by another process past its busy timeout, or on a full disk: requests get a
503 saying so (never a hang, never a half-made job), and a running job is retried from its last
checkpoint once the store can be written again, with the reason recorded."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from agentd.jobs import jobs_root
from agentd.store import BUSY_TIMEOUT_S
from tests.fixtures.tickets import ticket_records
from tests.reliability.servers import Server, until

HYPERPARAMETERS = {"n_epochs": 1, "batch_size": 2, "max_steps": 40, "checkpoint_every": 4, "learning_rate": 3e-3,
                   "seq_len": 64}


def start_job(client) -> tuple[str, str]:
    """(the job, its training file), once the job has trained five steps."""
    data = "".join(json.dumps(record) + "\n" for record in ticket_records(40)).encode()
    training_file = client.files.create(file=("tickets.jsonl", io.BytesIO(data)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training_file, seed=7,
                                         hyperparameters=HYPERPARAMETERS)
    until(lambda: (client.fine_tuning.jobs.retrieve(job.id).model_extra["agentd"]["progress"] or {})
          .get("step", 0) >= 5, what="step 5")
    return job.id, training_file


def assert_retried_and_finished(server, job_id: str) -> list[str]:
    """The job succeeded on a later attempt, every step once, and nothing else was made; its events."""
    client = server.client()
    finished = until(lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in ("succeeded", "failed") and j,
                     what="the job to end")
    assert finished.status == "succeeded", finished.error
    assert finished.model_extra["agentd"]["attempts"] >= 2
    messages = [event.message for event in client.fine_tuning.jobs.list_events(job_id, limit=200).data]
    assert any("resumes from its last checkpoint" in message for message in messages), messages[:20]
    curve = httpx.get(f"{server.url}/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    assert [entry["step"] for entry in curve] == list(range(1, 41))
    assert len(client.fine_tuning.jobs.list().data) == 1  # the refused request made nothing
    return messages


def test_a_store_locked_mid_job_is_a_503_then_the_job_resumes(tiny, tmp_path):
    server = Server(tmp_path, tiny).start()
    try:
        job_id, training_file = start_job(server.client())
        holder = sqlite3.connect(jobs_root(tmp_path) / "jobs.sqlite", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        started = time.monotonic()
        try:
            refused = httpx.post(f"{server.url}/v1/fine_tuning/jobs", timeout=60,
                                 json={"model": "tiny", "training_file": training_file})
            answered_after = time.monotonic() - started
            assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200  # the server is not stuck
            time.sleep(max(0.0, BUSY_TIMEOUT_S + 3 - answered_after))  # long enough for the worker's writes to fail
        finally:
            holder.rollback()
            holder.close()
        assert refused.status_code == 503 and "locked" in refused.json()["error"]["message"], refused.text
        assert answered_after < BUSY_TIMEOUT_S + 5
        messages = assert_retried_and_finished(server, job_id)
        assert any("could not write to the job store" in message for message in messages), messages[:20]
    finally:
        server.stop()


@pytest.fixture()
def small_disk(tmp_path):
    """A 128 MB file system of its own (tmpfs; mounting needs root, as CI and these machines have).
    At 48 MB a clean-clone CI run found it full before the test filled it (no room to create the filler)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Writes until the file system has no room left."""
    filler = disk / "filler"
    # Made empty before the job started: opening needs no room now. Unbuffered: a buffered file still
    # holding bytes the full disk refused raises again when it closes, outside the suppress below.
    with open(filler, "ab", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 2**16)
                out.flush()
    return filler


def test_a_full_disk_mid_job_is_a_503_then_the_job_resumes(tiny, small_disk, tmp_path):
    (small_disk / "filler").touch()
    server = Server(small_disk, tiny, log=tmp_path / "server.log").start()
    try:
        job_id, training_file = start_job(server.client())
        filler = fill(small_disk)
        try:
            refused = httpx.post(f"{server.url}/v1/fine_tuning/jobs", timeout=60,
                                 json={"model": "tiny", "training_file": training_file})
            assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
            time.sleep(3)  # the worker's next writes fail
        finally:
            filler.unlink()
        assert refused.status_code == 503 and "full" in refused.json()["error"]["message"], refused.text
        assert_retried_and_finished(server, job_id)
    finally:
        server.stop()
