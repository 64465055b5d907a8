"""Runs queued jobs in worker processes, a bounded number at once, and watches them end.

Nothing here runs a job in the caller's process. Each pass of the watching loop runs in a
thread (its SQLite calls may wait out another process's write lock), one pass at a time; the
worker table changes only under `_lock`, where `launch` also checks that the manager is not
closed, so nothing launches once `close()` returns. The on-success hooks run on the event loop
(they touch the server's model registry). A worker that
dies without recording an end (killed, out of memory) is started again to resume from its last
checkpoint, up to `max_attempts`; then the job fails with the tail of its log as the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from agentd.jobs import CANCELLED, FAILED, QUEUED, RUNNING, VALIDATING, Job, JobStore, jobs_root, open_store
from agentd.jobs.worker import EXIT_STORE_UNAVAILABLE

log = logging.getLogger(__name__)

# Success is noticed by `finished_at`; a job another process finished may commit a little after
# a later finish was seen, so each look reaches back this far (ids already seen are skipped).
_FINISH_SLACK_S = 30.0


class _Worker:
    """A worker process this manager started, or one it found alive after a restart (pid only)."""

    def __init__(self, job_id: str, pid: int, process: subprocess.Popen | None = None):
        self.job_id, self.pid, self.process = job_id, pid, process
        self.term_sent_at: float | None = None

    def exit_code(self) -> int | None:
        if self.process is not None:
            return self.process.poll()
        return None if is_worker_of(self.pid, self.job_id) else -1


def is_worker_of(pid: int, job_id: str) -> bool:
    """Whether `pid` is alive and is the worker of `job_id`: after a restart the OS may have
    given a dead worker's pid to an unrelated process, which must not be adopted (or signalled)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        command = process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # another user's process is never our worker
        return False
    return "agentd.jobs.worker" in command and job_id in command


class JobManager:
    def __init__(self, data_dir: Path, *, max_concurrent: int = 1, max_attempts: int = 3, poll_s: float = 0.5,
                 cancel_grace_s: float = 20.0, store: JobStore | None = None):
        self.data_dir = Path(data_dir)
        self.store = store or open_store(data_dir)
        self.max_concurrent, self.max_attempts = max_concurrent, max_attempts
        self.poll_s, self.cancel_grace_s = poll_s, cancel_grace_s
        self.on_success: list[Callable[[Job], None]] = []
        self._workers: dict[str, _Worker] = {}
        self._task: asyncio.Task | None = None
        self._closed = False
        self._lock = threading.Lock()  # guards `_workers` and `_closed`
        self._success_mark = 0.0
        self._noticed: dict[str, float] = {}
        self._noticed_lock = threading.Lock()  # a pass and a request may look for successes at once

    # -- lifecycle --------------------------------------------------------------------------

    def recover(self) -> None:
        """Jobs left `running` by a dead server: adopt their workers if still alive, requeue the others."""
        for job in self.store.list(statuses=(RUNNING,), limit=10_000):
            if job.worker_pid and is_worker_of(job.worker_pid, job.id):
                with self._lock:
                    self._workers[job.id] = _Worker(job.id, job.worker_pid)
            else:
                self._retry_or_fail(job, "the server stopped while the job was running")

    async def start(self) -> None:
        await asyncio.to_thread(self.recover)
        self.notice_finished()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._closed:
            try:
                self._call_hooks(await asyncio.to_thread(self.tick))
            except Exception:  # noqa: BLE001 - the loop must outlive one bad tick
                log.exception("job manager tick failed")
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        """Stops watching; running workers are asked to checkpoint and go back to the queue.

        Once this returns nothing is launched: `launch` refuses from the moment `_closed` is set
        (under the lock, so a launch under way has recorded its worker), and the pass under way
        ends before the workers are stopped.
        """
        await asyncio.to_thread(self._refuse_launches)
        if self._task is not None:
            await self._task  # ends after the pass under way, within a poll
        for worker in self._workers.values():
            _signal(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.cancel_grace_s
        while time.monotonic() < deadline and any(w.exit_code() is None for w in self._workers.values()):
            await asyncio.sleep(0.1)
        for worker in self._workers.values():
            if worker.exit_code() is None:
                _signal(worker.pid, signal.SIGKILL)
                if worker.process is not None:
                    await asyncio.to_thread(worker.process.wait)
        await asyncio.to_thread(self.tick_reap)
        self.store.close()

    def _refuse_launches(self) -> None:
        with self._lock:
            self._closed = True

    # -- one pass (in a thread) ---------------------------------------------------------------

    def tick(self) -> list[Job]:
        """Reaps, kills, launches; returns the jobs that succeeded since the last look, whose
        on-success hooks the caller runs on the event loop."""
        self.tick_reap()
        now = time.monotonic()
        for worker in list(self._workers.values()):
            if worker.term_sent_at and now - worker.term_sent_at > self.cancel_grace_s:
                _signal(worker.pid, signal.SIGKILL)
        for job in reversed(self.store.list(statuses=(QUEUED,), limit=100)):
            if len(self._workers) >= self.max_concurrent:
                break
            self.launch(job.id)
        return self._newly_succeeded()

    def tick_reap(self) -> None:
        for job_id, worker in list(self._workers.items()):
            code = worker.exit_code()
            if code is None:
                continue
            # The end is recorded before the worker is forgotten: if the store cannot be written now
            # (locked, full), this raises and the next pass tries again, rather than leaving the job
            # `running` with nobody watching it.
            job = self.store.get(job_id)
            if job.status == RUNNING:  # the worker died without recording an end
                if job.cancel_requested:
                    self.store.finish(job_id, CANCELLED, message="cancelled")
                elif code == EXIT_STORE_UNAVAILABLE:
                    self._retry_or_fail(job, "the worker could not write to the job store (locked past its "
                                             "timeout, or the disk full)")
                else:
                    self._retry_or_fail(job, f"the worker process exited with code {code}")
            with self._lock:
                del self._workers[job_id]

    def notice_finished(self) -> None:
        """Calls the `on_success` hooks once per job that succeeded since the last look, whichever
        process ran it (this manager, `agentd finetune`, another server on the same data folder)."""
        self._call_hooks(self._newly_succeeded())

    def _newly_succeeded(self) -> list[Job]:
        since = self._success_mark - _FINISH_SLACK_S
        succeeded = self.store.succeeded_since(since)
        with self._noticed_lock:  # each job is returned once, whoever looks
            new = [job for job in succeeded if job.id not in self._noticed]
            for job in new:
                self._noticed[job.id] = job.finished_at
                self._success_mark = max(self._success_mark, job.finished_at)
            self._noticed = {job_id: at for job_id, at in self._noticed.items() if at >= since}
        return new

    def _call_hooks(self, jobs: list[Job]) -> None:
        for job in jobs:
            for hook in self.on_success:
                try:
                    hook(job)
                except Exception:  # noqa: BLE001 - one failing hook must not stop the others
                    log.exception("on-success hook failed for job %s", job.id)

    def launch(self, job_id: str) -> bool:
        """Claims a queued job and starts its worker; False when someone else claimed it first
        or the manager is closed."""
        with self._lock:
            if self._closed or not self.store.claim(job_id):
                return False
            log_path = jobs_root(self.data_dir) / job_id / "worker.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log_file:
                process = subprocess.Popen(
                    # -P: the current folder is not searched first (another checkout's agentd would be run).
                    [sys.executable, "-P", "-m", "agentd.jobs.worker", str(self.data_dir), job_id],
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    # Its own session: a Ctrl-C meant for the CLI or server does not kill training mid-step.
                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self.store.set_worker(job_id, process.pid)
            self._workers[job_id] = _Worker(job_id, process.pid, process)
            return True

    def _retry_or_fail(self, job: Job, reason: str) -> None:
        if job.attempts < self.max_attempts:
            self.store.requeue(job.id, f"{reason}; it resumes from its last checkpoint "
                                       f"(attempt {job.attempts + 1} of {self.max_attempts})")
        else:
            self.store.finish(job.id, FAILED, message=f"failed: {reason}",
                              error={"code": "worker_died", "param": None,
                                     "message": f"{reason}, {job.attempts} times; last log lines: "
                                                f"{self.log_tail(job.id, 5)}"})

    # -- requests ---------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job.status in (QUEUED, VALIDATING):
            self.store.finish(job_id, CANCELLED, message="cancelled before it started")
        elif job.status == RUNNING:
            self.store.request_cancel(job_id)
            self.store.add_event(job_id, "cancellation requested")
            worker = self._workers.get(job_id)
            if worker:
                _signal(worker.pid, signal.SIGTERM)
                worker.term_sent_at = time.monotonic()
            elif job.worker_pid and is_worker_of(job.worker_pid, job_id):  # run by another process
                _signal(job.worker_pid, signal.SIGTERM)
        return self.store.get(job_id)

    def log_tail(self, job_id: str, lines: int = 50) -> str:
        path = jobs_root(self.data_dir) / job_id / "worker.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
