"""One job in its own process: `python -m agentd.jobs.worker DATA_DIR JOB_ID`.

The worker records everything in the job store itself (events, metrics, the end), so the
process that started it may die without losing anything. SIGTERM asks it to stop at the next
step boundary: a cancelled job ends `cancelled`; otherwise (the server shutting down) it goes
back to the queue to resume from the checkpoint written on the way out.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from agentd.jobs import CANCELLED, FAILED, SUCCEEDED, Job, JobStore, jobs_root, open_store
from agentd.store import StoreError

# The worker's exit code when the job store could not be written (sysexits' EX_TEMPFAIL): try again.
EXIT_STORE_UNAVAILABLE = 75
RUNNERS = {"fine_tune": "agentd.jobs.fine_tune:run", "evaluation": "agentd.jobs.evaluate:run"}


class Reporter:
    """What a runner uses to tell the store how it is doing, and to learn whether to stop."""

    def __init__(self, store: JobStore, job: Job, data_dir: Path):
        self.store, self.job, self.data_dir = store, job, data_dir
        self.job_dir = jobs_root(data_dir) / job.id
        self.terminated = False
        self._checked_at = 0.0
        self._cancelled = False

    def message(self, text: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
        self.store.add_event(self.job.id, text, level=level, data=data)
        print(f"[{level}] {text}", flush=True)

    def metrics(self, step: int, data: dict[str, Any], message: str) -> None:
        self.store.add_metrics(self.job.id, step, data)
        self.store.add_event(self.job.id, message, type="metrics", data=data)

    def progress(self, progress: dict[str, Any]) -> None:
        self.store.set_progress(self.job.id, progress)

    @property
    def cancelled(self) -> bool:
        if not self._cancelled and time.monotonic() - self._checked_at > 1.0:
            self._checked_at = time.monotonic()
            self._cancelled = self.store.get(self.job.id).cancel_requested
        return self._cancelled

    def stop_requested(self) -> bool:
        return self.terminated or self.cancelled


def resolve_runner(kind: str):
    module, _, name = RUNNERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def run_job(data_dir: Path, job_id: str) -> int:
    store = open_store(data_dir)
    job = store.get(job_id)
    reporter = Reporter(store, job, data_dir)
    reporter.job_dir.mkdir(parents=True, exist_ok=True)

    def terminate(*_: Any) -> None:
        reporter.terminated = True

    signal.signal(signal.SIGTERM, terminate)
    reporter.message(f"worker {os.getpid()} started (attempt {job.attempts})")
    try:
        result = resolve_runner(job.kind)(job, reporter)
    except StoreError as error:
        # The job store, not the job, failed (locked past the timeout, the disk full): nothing can be
        # recorded now. The manager sees this exit code and retries the job from its last checkpoint.
        print(f"the job store cannot be written: {error}", file=sys.stderr, flush=True)
        return EXIT_STORE_UNAVAILABLE
    except Exception as error:  # noqa: BLE001 - every failure is recorded with its reason
        traceback.print_exc()
        code = getattr(error, "code", None) or type(error).__name__
        param = getattr(error, "param", None)  # an EvaluationError names the field at fault
        store.finish(job_id, FAILED, error={"code": code, "message": str(error),
                                            "param": param if isinstance(param, str) else None},
                     message=f"failed: {error}")
        return 1
    if reporter.stop_requested():
        if reporter.cancelled or store.get(job_id).cancel_requested:
            store.finish(job_id, CANCELLED, message="cancelled")
        else:
            store.requeue(job_id, "interrupted by a shutdown; it resumes from its last checkpoint")
        return 0
    store.finish(job_id, SUCCEEDED, result=result, message="succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(run_job(Path(sys.argv[1]), sys.argv[2]))
