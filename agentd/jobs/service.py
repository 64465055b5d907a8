"""The jobs service: one front for creating, following and cancelling jobs, and for the models they make.

The HTTP routes, the agents' tools and the CLI all go through it, so a job is validated,
recorded and queued the same way whoever asks. Fine-tuning is the first kind, evaluation the
second; another kind adds its create method and, if its inputs need checking in the background,
an entry in `_VALIDATORS`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentd.jobs import FAILED, QUEUED, VALIDATING, Job
from agentd.jobs import evaluate as evaluation_job
from agentd.jobs.evaluate import EvaluationRequestError, check_tasks, explicit_target, run_config
from agentd.jobs.fine_tune import (KIND, FineTuneRequestError, checkpoint_model_id, checkpoint_spec, count_examples,
                                   fine_tuned_spec, parse_model_id, training_params, validate_files)
from agentd.jobs.hyperparameters import chosen_automatically
from agentd.jobs.manager import JobManager
from pipelines.registry import ModelSpec

log = logging.getLogger(__name__)

# Checks a job's inputs (slow: run in a thread), then moves it from `validating_files` to the queue.
_VALIDATORS: dict[str, Callable[[Any, str], None]] = {KIND: validate_files}


class JobService:
    """Jobs in `data_dir`: the store, the manager that runs them, and the checks before they queue.

    `file_store` resolves uploaded file ids; `base_folder(model_id)` gives the weights folder a
    model fine-tunes from, or raises ValueError saying why it cannot; `model_target(model_id)`
    gives the target dict an evaluation opens the model with (`evaluation.models.open_model`),
    or raises EvaluationRequestError / ValueError for a model it does not know (it may be slow:
    it runs in a thread).
    """

    def __init__(self, data_dir: Path, *, file_store=None, base_folder: Callable[[str], Path] | None = None,
                 model_target: Callable[[str], dict[str, Any]] | None = None,
                 max_concurrent: int = 1, poll_s: float = 0.5):
        self.manager = JobManager(data_dir, max_concurrent=max_concurrent, poll_s=poll_s)
        self.store = self.manager.store
        self.data_dir = self.manager.data_dir
        self.file_store, self.base_folder, self.model_target = file_store, base_folder, model_target
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
        (the CLI). `n_epochs`, `batch_size` and `learning_rate_multiplier` left out or "auto" are
        chosen from the number of training examples (agentd.jobs.hyperparameters); the job records
        the numbers. Raises FineTuneRequestError naming the parameter at fault."""
        if self.base_folder is None:
            raise FineTuneRequestError("no model can be fine-tuned here", param="model", code="model_not_available")
        try:
            folder = self.base_folder(model)
        except ValueError as error:
            raise FineTuneRequestError(str(error), param="model", code="model_not_available") from None
        training_paths = self._paths(training_file, "training_file")
        validation_paths = self._paths(validation_file, "validation_file") if validation_file else []
        # "auto" hyperparameters depend on the data's size, so they are chosen once it is counted.
        n_examples = await asyncio.to_thread(count_examples, training_paths)
        training = training_params(folder, training_paths, validation_paths, hyperparameters, seed,
                                   n_examples=n_examples)
        params = {"model": model, "training": training, "training_file": _named(training_file),
                  "validation_file": _named(validation_file) if validation_file else None, "suffix": suffix,
                  "hyperparameters": {"auto": chosen_automatically(hyperparameters), "n_examples": n_examples}}
        job = self.store.create(KIND, params, metadata=metadata, status=VALIDATING, prefix="ftjob")
        self._validate_later(job)
        return job

    async def create_evaluation(self, *, models: Sequence[str | dict[str, Any]],
                                tasks: Sequence[str | dict[str, Any]], config: dict[str, Any] | None = None,
                                judge: str | dict[str, Any] | list[str | dict[str, Any]] | None = None,
                                metadata: dict[str, Any] | None = None) -> Job:
        """A queued evaluation of every model on every task. Models are served ids (resolved with
        `model_target`), `URL#model`, or endpoint dicts; tasks are what `evaluation.tasks.load_task`
        takes; `judge` is the judge model (or a list of them) LLM-as-judge metrics may ask for.
        Every task is loaded and every model resolved first: raises EvaluationRequestError
        naming the parameter at fault, and nothing is queued."""
        if not models:
            raise EvaluationRequestError("name at least one model", param="model")
        settings = run_config(config)
        targets = [await self._target(model, index) for index, model in enumerate(models)]
        judges = {}
        for index, one in enumerate(judge if isinstance(judge, list) else [judge] if judge else []):
            judge_target = await self._target(one, index, param="judge")
            judges[judge_target["id"]] = judge_target
        specs = await asyncio.to_thread(check_tasks, list(tasks))
        params = {"models": targets, "tasks": specs, "config": settings, "judges": judges}
        return self.store.create(evaluation_job.KIND, params, metadata=metadata, status=QUEUED, prefix="evaljob")

    async def _target(self, model: str | dict[str, Any], index: int, param: str = "model") -> dict[str, Any]:
        try:
            target = explicit_target(model, index)
        except EvaluationRequestError as error:
            raise EvaluationRequestError(error.message, param=param if param != "model" else error.param) from None
        if target is not None:
            return target
        if self.model_target is None:
            raise EvaluationRequestError(f"model {model!r} is not known here; give an endpoint as URL#model",
                                         param=param, code="model_not_found")
        try:
            return await asyncio.to_thread(self.model_target, model)
        except EvaluationRequestError as error:
            raise EvaluationRequestError(error.message, param=param, code=error.code) from None
        except ValueError as error:
            raise EvaluationRequestError(str(error), param=param, code="model_not_found") from None

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
