"""Stand-in jobs and deployments services for the agent benchmark.

The benchmark measures which calls an agent makes, not what training does, and a real fine-tune
or evaluation would take minutes per request. So the REAL toolkits (`JobTools`,
`EvaluationTools`, `DeploymentTools`, `WorkflowTools`) run against these small services, which
answer as the real ones do: a fine-tune gets a new `ftjob-…` id in a real `JobStore` and
succeeds at once with an `ft:<base>:agentd::<id>` model; an evaluation gets an `evaljob-…` id
and results in the evaluation job's shape (a score with its standard error per model × task);
a deployment gets a `dep-…` id and is ready at once. Unknown models, files and tasks are refused
with the same errors the real services raise, so the agent sees real observation shapes,
errors included.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentd.agents.runtime import AGENT_TYPES
from agentd.deployments.model import Deployment, DeploymentError
from agentd.jobs import QUEUED, RUNNING, SUCCEEDED, Job, JobStore
from agentd.jobs.evaluate import EvaluationRequestError, ServedModels
from agentd.jobs.fine_tune import FineTuneRequestError, count_examples, fine_tuned_model_id, training_params
from evaluation.tasks.loader import builtin_tasks
from pipelines.embedded import EMBEDDED_MODEL_ID
from pipelines.registry import ModelSpec
from tools.files import FileNotFound, FileStore

BASE_MODELS = (EMBEDDED_MODEL_ID,)


class StandInJobs:
    """What the job tools use of `agentd.jobs.service.JobService`, with jobs that end at once.

    `also_served` are the other model ids the server would list (the tool-use adapter's model
    when it is on): the tools resolve a name like "smollm2" against all of them, as on a server.
    """

    def __init__(self, data_dir: Path, file_store: FileStore, also_served: Sequence[str] = ()):
        self.data_dir = Path(data_dir)
        self.file_store = file_store
        self.also_served = list(also_served)
        self.store = JobStore(self.data_dir / "jobs" / "jobs.sqlite")
        # The tools ask the resolver a server gives its jobs service which ids are served.
        self.model_target = ServedModels(self.specs, data_dir=self.data_dir, self_url=lambda: "http://127.0.0.1/v1",
                                         agents=lambda: list(AGENT_TYPES))

    def specs(self) -> dict[str, ModelSpec]:
        """The model registry a server would have: base models, others served, fine-tunes made here."""
        tuned = [job.result["fine_tuned_model"] for job in self.store.list(kind="fine_tune", limit=10_000)
                 if job.status == SUCCEEDED and job.result]
        return {**{model: ModelSpec(id=model, kind="embedded") for model in [*BASE_MODELS, *self.also_served]},
                **{model: ModelSpec(id=model, kind="local", parent=EMBEDDED_MODEL_ID) for model in tuned}}

    def served(self) -> list[str]:
        """Every id a request may name: the registry's models and the agents."""
        return [*self.specs(), *AGENT_TYPES]

    async def create_fine_tune(self, *, model: str, training_file: str | Path | Sequence[Path],
                               hyperparameters: dict[str, Any] | None = None, suffix: str | None = None,
                               **_: Any) -> Job:
        if model not in BASE_MODELS:
            raise FineTuneRequestError(f"model {model!r} cannot be fine-tuned here; base models: "
                                       f"{', '.join(BASE_MODELS)}", param="model")
        paths = self._check_file(training_file)
        # The training configuration as the real service records it (the workflow reports it back), with
        # its "auto" values and its refusals of unknown or invalid hyperparameters.
        training = training_params(Path("stand-in") / model, paths, [], hyperparameters, None,
                                   n_examples=count_examples(paths))
        params = {"model": model, "training_file": str(training_file), "suffix": suffix, "training": training}
        job = self.store.create("fine_tune", params, status=QUEUED, prefix="ftjob")
        self.store.transition(job.id, QUEUED, RUNNING, "training started")
        self.store.set_progress(job.id, {"step": 30, "total_steps": 30, "loss": 0.41})
        self.store.finish(job.id, SUCCEEDED, message="training finished", result={
            "fine_tuned_model": fine_tuned_model_id(model, job.id, suffix), "final_loss": 0.41, "steps": 30})
        return self.store.get(job.id)

    def _check_file(self, training_file: str | Path | Sequence[Path]) -> list[Path]:
        if isinstance(training_file, str) and training_file.startswith("file-"):
            try:
                return [self.file_store.path(training_file)]
            except FileNotFound:
                raise FineTuneRequestError(f"no file with id {training_file!r}; upload it with purpose "
                                           "'fine-tune' first", param="training_file") from None
        named = [training_file] if isinstance(training_file, str | Path) else list(training_file)
        paths = [Path(path).expanduser() for path in named]
        for path in paths:
            if not path.is_file():
                raise FineTuneRequestError(f"no file with id {str(path)!r}; upload it with purpose "
                                           "'fine-tune' first", param="training_file")
        return paths

    async def create_evaluation(self, *, models: Sequence[str | dict[str, Any]], tasks: Sequence[str | dict[str, Any]],
                                config: dict[str, Any] | None = None, **_: Any) -> Job:
        if not models:
            raise EvaluationRequestError("name at least one model", param="model")
        served = self.served()
        names = [model if isinstance(model, str) else str(model.get("id")) for model in models]
        for name in names:
            if name not in served:
                raise EvaluationRequestError(f"model {name!r} is not served here; served: {', '.join(served)}",
                                             param="model", code="model_not_found")
        known = builtin_tasks()
        for index, task in enumerate(tasks):
            if not (isinstance(task, str) and (task in known or Path(task).expanduser().is_file())):
                raise EvaluationRequestError(f"unknown task {task!r}; built-in tasks: {', '.join(known)}",
                                             param=f"tasks[{index}]", code="task_not_found")
        if not tasks:
            raise EvaluationRequestError("name at least one task", param="tasks")
        limit = (config or {}).get("limit")
        params = {"models": [{"id": name} for name in names], "tasks": list(tasks), "config": config or {}}
        job = self.store.create("evaluation", params, status=QUEUED, prefix="evaljob")
        self.store.transition(job.id, QUEUED, RUNNING, "evaluation started")
        results = [_task_result(name, task, limit) for name in names for task in tasks]
        self.store.finish(job.id, SUCCEEDED, result={"results": results}, message="evaluation finished")
        return self.store.get(job.id)

    async def validated(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def list(self, *, kind: str | None = None, statuses: tuple[str, ...] = (), after: str | None = None,
             limit: int = 20) -> list[Job]:
        return self.store.list(kind=kind, statuses=statuses, after=after, limit=limit)

    def seed_running_fine_tune(self, model: str = EMBEDDED_MODEL_ID) -> Job:
        """A fine-tune half-way through (for "how is my job doing?")."""
        job = self.store.create("fine_tune", {"model": model, "training_file": "file-seed", "suffix": None},
                                status=QUEUED, prefix="ftjob")
        self.store.transition(job.id, QUEUED, RUNNING, "training started")
        self.store.set_progress(job.id, {"step": 12, "total_steps": 40, "loss": 1.37, "eta_seconds": 95})
        return self.store.get(job.id)


def _task_result(model: str, task: str, limit: int | None) -> dict[str, Any]:
    """A result in the evaluation job's shape; the score is fixed by (model, task), so runs repeat."""
    digest = hashlib.sha256(f"{model}|{task}".encode()).digest()
    accuracy = 0.25 + digest[0] / 255 * 0.5 + (0.1 if model.startswith("ft:") else 0.0)
    samples = limit or 100
    stderr = (accuracy * (1 - accuracy) / max(1, samples - 1)) ** 0.5
    return {"task": task, "task_version": "1", "model": model, "model_fingerprint": digest.hex()[:16],
            "num_fewshot": 0, "seed": 1234, "limit": limit, "chat_template": True, "samples": samples,
            "unparsed": 0, "metrics": {"acc": {"value": round(accuracy, 4), "stderr": round(stderr, 4)}},
            "cached": 0, "seconds": 1.0}


class StandInDeployments:
    """What the deployment tools use of `agentd.deployments.DeploymentService`, ready at once."""

    def __init__(self, jobs: StandInJobs):
        self.jobs = jobs
        self.registry = self  # the tools read the served ids from `service.registry.specs`
        self._deployments: dict[str, Deployment] = {}

    @property
    def specs(self) -> dict[str, ModelSpec]:
        return self.jobs.specs()

    async def create(self, *, model: str, engine: str = "auto", adapters: list[str] | None = None,
                     keep_alive: float | str | None = None, **_: Any) -> Deployment:
        from agentd.deployments.model import parse_keep_alive

        served = list(self.jobs.specs())
        for name, param in [(model, "model"), *((adapter, "adapters") for adapter in adapters or [])]:
            if name not in served:
                raise DeploymentError(f"{name!r} is not a model or fine-tune known here; known: {', '.join(served)}",
                                      param=param, code="model_not_found")
        try:
            keep_alive_s = parse_keep_alive(keep_alive)
        except ValueError as error:
            raise DeploymentError(str(error), param="keep_alive") from None
        now = int(time.time())
        deployment = Deployment(id=f"dep-{secrets.token_hex(6)}", model=model, served_id=model,
                                engine="vllm" if engine == "vllm" else "embedded", status="ready",
                                adapters={adapter: f"/adapters/{adapter}" for adapter in adapters or []}, options={},
                                keep_alive_s=keep_alive_s, created_at=now, updated_at=now, memory_bytes=540 * 2**20)
        self._deployments[deployment.id] = deployment
        return deployment

    async def follow(self, deployment_id: str, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        yield {"type": "loading", "message": f"loading {self._deployments[deployment_id].model}"}
        yield {"type": "ready", "message": "ready"}

    def get(self, deployment_id: str) -> Deployment:
        if deployment_id not in self._deployments:
            raise DeploymentError(f"no deployment {deployment_id!r}", status=404, param="deployment")
        return self._deployments[deployment_id]

    def list(self, *, include_stopped: bool = False) -> list[Deployment]:
        return [d for d in self._deployments.values() if include_stopped or d.status != "stopped"]

    async def delete(self, deployment_id: str) -> Deployment:
        stopped = replace(self.get(deployment_id), status="stopped", memory_bytes=None)
        self._deployments[deployment_id] = stopped
        return stopped

    async def remove_adapter(self, deployment_id: str, adapter_id: str) -> Deployment:
        deployment = self.get(deployment_id)
        adapters = {key: value for key, value in deployment.adapters.items() if key != adapter_id}
        self._deployments[deployment_id] = replace(deployment, adapters=adapters)
        return self._deployments[deployment_id]
