"""The jobs service: one front for creating, following and cancelling jobs, and for the models they make.

The HTTP routes, the agents' tools and the CLI all go through it, so a job is validated,
recorded and queued the same way whoever asks. Fine-tuning is the first kind; another kind
adds its create method and, if its inputs need checking, an entry in `_VALIDATORS`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentd.jobs import FAILED, VALIDATING, Job
from agentd.jobs.fine_tune import (KIND, FineTuneRequestError, checkpoint_model_id, checkpoint_spec,
                                   fine_tuned_spec, parse_model_id, training_params, validate_files)
from agentd.jobs.manager import JobManager
from pipelines.registry import ModelSpec

log = logging.getLogger(__name__)

# Checks a job's inputs (slow: run in a thread), then moves it from `validating_files` to the queue.
_VALIDATORS: dict[str, Callable[[Any, str], None]] = {KIND: validate_files}


class JobService:
    """Jobs in `data_dir`: the store, the manager that runs them, and the checks before they queue.

    `file_store` resolves uploaded file ids; `base_folder(model_id)` gives the weights folder a
    model fine-tunes from, or raises ValueError saying why it cannot.
    """

    def __init__(self, data_dir: Path, *, file_store=None, base_folder: Callable[[str], Path] | None = None,
                 max_concurrent: int = 1, poll_s: float = 0.5):
        self.manager = JobManager(data_dir, max_concurrent=max_concurrent, poll_s=poll_s)
        self.store = self.manager.store
        self.file_store, self.base_folder = file_store, base_folder
        self._validations: dict[str, asyncio.Task] = {}

    async def start(self) -> None:
        """Runs queued jobs from now on; jobs a stopped server left half-checked are checked again."""
        await self.manager.start()
        for job in self.store.list(statuses=(VALIDATING,), limit=10_000):
            self._validate_later(job)

    async def close(self) -> None:
        # An unfinished check leaves its job in `validating_files`; the next start checks it again.
        for task in list(self._validations.values()):
            task.cancel()
        await asyncio.gather(*self._validations.values(), return_exceptions=True)
        await self.manager.close()

    # -- creating ---------------------------------------------------------------------------

    async def create_fine_tune(self, *, model: str, training_file: str | Path | Sequence[Path],
                               validation_file: str | Path | Sequence[Path] | None = None,
                               hyperparameters: dict[str, Any] | None = None, seed: int | None = None,
                               suffix: str | None = None, metadata: dict[str, Any] | None = None) -> Job:
        """A fine-tune job in `validating_files`: its files are checked in the background (await
        `validated` for the outcome), then it queues. Files are uploaded file ids, or local paths
        (the CLI). Raises FineTuneRequestError naming the parameter at fault."""
        if self.base_folder is None:
            raise FineTuneRequestError("no model can be fine-tuned here", param="model", code="model_not_available")
        try:
            folder = self.base_folder(model)
        except ValueError as error:
            raise FineTuneRequestError(str(error), param="model", code="model_not_available") from None
        training_paths = self._paths(training_file, "training_file")
        validation_paths = self._paths(validation_file, "validation_file") if validation_file else []
        training = training_params(folder, training_paths, validation_paths, hyperparameters, seed)
        params = {"model": model, "training": training, "training_file": _named(training_file),
                  "validation_file": _named(validation_file) if validation_file else None, "suffix": suffix}
        job = self.store.create(KIND, params, metadata=metadata, status=VALIDATING, prefix="ftjob")
        self._validate_later(job)
        return job

    async def validated(self, job_id: str) -> Job:
        """The job once its files are checked: queued (or further), or failed with the reason."""
        task = self._validations.get(job_id)
        if task is not None:
            await asyncio.shield(task)
        return self.store.get(job_id)

    def _paths(self, value: str | Path | Sequence[Path], param: str) -> list[Path]:
        if isinstance(value, Path):
            return [value.resolve()]
        if not isinstance(value, str):
            return [Path(path).resolve() for path in value]
        from tools.files import FileNotFound

        if self.file_store is None:
            raise FineTuneRequestError("file uploads are not enabled on this server", param=param)
        try:
            return [self.file_store.path(value)]
        except FileNotFound:
            raise FineTuneRequestError(f"no file with id {value!r}; upload it with purpose 'fine-tune' first",
                                       param=param) from None

    def _validate_later(self, job: Job) -> None:
        task = asyncio.create_task(asyncio.to_thread(self._validate, job))
        self._validations[job.id] = task
        task.add_done_callback(lambda _: self._validations.pop(job.id, None))

    def _validate(self, job: Job) -> None:
        try:
            _VALIDATORS[job.kind](self.store, job.id)
        except Exception as error:  # noqa: BLE001 - a job must never stay `validating_files` for ever
            log.exception("validating job %s failed", job.id)
            self.store.finish(job.id, FAILED, error={"code": "validation_error", "message": str(error), "param": None},
                              message=f"file validation failed: {error}")

    # -- following --------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def list(self, *, kind: str | None = None, statuses: tuple[str, ...] = (), after: str | None = None,
             limit: int = 20) -> list[Job]:
        return self.store.list(kind=kind, statuses=statuses, after=after, limit=limit)

    def cancel(self, job_id: str) -> Job:
        return self.manager.cancel(job_id)

    # -- the models jobs make ---------------------------------------------------------------

    def on_new_model(self, callback: Callable[[ModelSpec], None]) -> None:
        """`callback(spec)` once for each model a job made, those made before included (from `start`)."""

        def offer(job: Job) -> None:
            spec = fine_tuned_spec(job)
            if spec is not None:
                callback(spec)

        self.manager.on_success.append(offer)

    def notice_finished(self) -> None:
        """Looks for jobs that succeeded since the last look now rather than at the next tick."""
        self.manager.notice_finished()

    def model_spec(self, model_id: str) -> ModelSpec | None:
        """The model a fine-tuned model or checkpoint id names (`ft:...`, `ft:...:ckpt-step-N`), or
        None. A checkpoint's weights are exported on first use: call this off the event loop."""
        parsed = parse_model_id(model_id)
        if parsed is None:
            return None
        prefix, step = parsed
        for job in self.store.with_id_prefix(prefix):
            if job.kind != KIND:
                continue
            if step is None:
                spec = fine_tuned_spec(job)
                if spec is not None and spec.id == model_id:
                    return spec
                continue
            if checkpoint_model_id(job, step) != model_id:
                continue
            for entry in self.store.checkpoints(job.id):
                if entry["step"] == step and Path(entry["path"]).is_dir():
                    return checkpoint_spec(job, step, Path(entry["path"]))
        return None


def _named(value: str | Path | Sequence[Path]) -> str:
    """What a job records as its file: the uploaded file's id, or the (first) local path."""
    if isinstance(value, str):
        return value
    return str(Path(value if isinstance(value, Path) else value[0]).resolve())
