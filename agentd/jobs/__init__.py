"""Durable jobs: a SQLite store, worker processes, a manager that queues, runs, cancels and resumes.

Callers (the HTTP routes, the tools, the CLI) create, cancel and list jobs through
`agentd.jobs.service.JobService`; what a job left behind (events, metrics, checkpoints) they
read from its `store`.
Fine-tuning is the first kind of job; evaluation uses the same machinery.
"""

from pathlib import Path

from agentd.jobs.store import (CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, SUCCEEDED, VALIDATING, Event,
                               Job, JobNotFound, JobStore)


def jobs_root(data_dir: Path) -> Path:
    return Path(data_dir) / "jobs"


def open_store(data_dir: Path) -> JobStore:
    return JobStore(jobs_root(data_dir) / "jobs.sqlite")


__all__ = ["CANCELLED", "FAILED", "FINISHED", "QUEUED", "RUNNING", "SUCCEEDED", "VALIDATING", "Event",
           "Job", "JobNotFound", "JobStore", "jobs_root", "open_store"]
