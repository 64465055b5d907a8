"""Runs queued jobs in worker processes, a bounded number at once, and watches them end.

Nothing here runs a job in the caller's process. The watching loop runs on the event loop
itself (its store calls are short SQLite writes, Popen returns at once), so the worker table
has one owner and `close()` can promise that nothing launches after it returns. A worker that
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
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from agentd.jobs import CANCELLED, FAILED, QUEUED, RUNNING, VALIDATING, Job, JobStore, jobs_root, open_store

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
        self._success_mark = 0.0
        self._noticed: dict[str, float] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def recover(self) -> None:
        """Jobs left `running` by a dead server: adopt their workers if still alive, requeue the others."""
        for job in self.store.list(statuses=(RUNNING,), limit=10_000):
            if job.worker_pid and is_worker_of(job.worker_pid, job.id):
                self._workers[job.id] = _Worker(job.id, job.worker_pid)
            else:
                self._retry_or_fail(job, "the server stopped while the job was running")

    async def start(self) -> None:
        self.recover()
        self.notice_finished()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad tick
                log.exception("job manager tick failed")
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        """Stops watching; running workers are asked to checkpoint and go back to the queue.

        Once this returns nothing is launched: the loop's ticks run on the event loop, so the
        cancelled task cannot be in the middle of one, and `launch` refuses from here on.
        """
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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
        self.tick_reap()
        self.store.close()

    # -- one pass ---------------------------------------------------------------------------

    def tick(self) -> None:
        self.tick_reap()
        now = time.monotonic()
        for worker in list(self._workers.values()):
            if worker.term_sent_at and now - worker.term_sent_at > self.cancel_grace_s:
                _signal(worker.pid, signal.SIGKILL)
        for job in reversed(self.store.list(statuses=(QUEUED,), limit=100)):
            if len(self._workers) >= self.max_concurrent:
                break
            self.launch(job.id)
        self.notice_finished()

    def tick_reap(self) -> None:
        for job_id, worker in list(self._workers.items()):
            code = worker.exit_code()
            if code is None:
                continue
            del self._workers[job_id]
            job = self.store.get(job_id)
            if job.status == RUNNING:  # the worker died without recording an end
                if job.cancel_requested:
                    self.store.finish(job_id, CANCELLED, message="cancelled")
                else:
                    self._retry_or_fail(job, f"the worker process exited with code {code}")

    def notice_finished(self) -> None:
        """Calls the `on_success` hooks once per job that succeeded since the last look, whichever
        process ran it (this manager, `agentd finetune`, another server on the same data folder)."""
        since = self._success_mark - _FINISH_SLACK_S
        for job in self.store.succeeded_since(since):
            if job.id in self._noticed:
                continue
            self._noticed[job.id] = job.finished_at
            self._success_mark = max(self._success_mark, job.finished_at)
            for hook in self.on_success:
                try:
                    hook(job)
                except Exception:  # noqa: BLE001 - one failing hook must not stop the others
                    log.exception("on-success hook failed for job %s", job.id)
        self._noticed = {job_id: at for job_id, at in self._noticed.items() if at >= since}

    def launch(self, job_id: str) -> bool:
        """Claims a queued job and starts its worker; False when someone else claimed it first
        or the manager is closed."""
        if self._closed or not self.store.claim(job_id):
            return False
        log_path = jobs_root(self.data_dir) / job_id / "worker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "agentd.jobs.worker", str(self.data_dir), job_id],
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
