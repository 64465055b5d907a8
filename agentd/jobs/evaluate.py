"""The evaluation job: every model × task of its parameters through `evaluation.runner.evaluate`.

A job records only what a worker needs to reopen its models (target dicts, see
`evaluation.models.open_model`), never a secret: an endpoint's key travels as the name of an
environment variable the worker inherits. Per-sample results go to one shared result store
(`<data_dir>/evaluation/results.sqlite`), so a job requeued after a shutdown, or a repeated
run, answers the samples already scored from there instead of asking the model again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentd.jobs.store import Job
from agentd.jobs.worker import Reporter
from pipelines.registry import ModelSpec

KIND = "evaluation"
# The variable a server sets to one of its own API keys, so that workers evaluating a model
# through the server's own /v1 can authenticate without the key being written into the job.
SELF_API_KEY_ENV = "AGENTD_SELF_API_KEY"


class EvaluationRequestError(ValueError):
    """An evaluation that cannot be queued, naming the parameter at fault (a 400 at the API)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = "invalid_value"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class EvaluationConfig(BaseModel):
    """The run settings a job accepts, as lm-evaluation-harness users know them."""

    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(None, ge=1)
    num_fewshot: int | None = Field(None, ge=0, le=64)
    seed: int = 1234
    batch_size: int = Field(8, ge=1, le=512)


def results_path(data_dir: Path) -> Path:
    return Path(data_dir) / "evaluation" / "results.sqlite"


# -- what a model id means (the server's resolver) -----------------------------------------------


class ServedModels:
    """`model_target(model_id)` for a server: a model it serves from weights opens locally in the
    worker; anything else it serves (upstream, agents) is evaluated through the server's own /v1.

    `specs` are the registry's specs (read at call time: fine-tunes are added while serving),
    `find_spec` names `ft:` ids not offered yet (slow: call the resolver off the event loop),
    `self_url()` is the server's own /v1 base URL, `agents` the agent model ids, and
    `embedded_folder()` where the registry keeps the embedded model's converted weights.
    """

    def __init__(self, specs: Callable[[], dict[str, ModelSpec]], *, data_dir: Path,
                 self_url: Callable[[], str], agents: Callable[[], list[str]] = list,
                 find_spec: Callable[[str], ModelSpec | None] | None = None, dtype: str = "auto",
                 api_key_env: str | None = None, embedded_folder: Callable[[], Path] | None = None):
        self.specs, self.data_dir, self.self_url, self.agents = specs, Path(data_dir), self_url, agents
        self.find_spec, self.dtype, self.api_key_env = find_spec, dtype, api_key_env
        self.embedded_folder = embedded_folder

    def __call__(self, model_id: str) -> dict[str, Any]:
        spec = self.specs().get(model_id)
        if spec is None and self.find_spec is not None:
            spec = self.find_spec(model_id)
        if spec is not None and spec.kind == "embedded" and self.embedded_folder is not None:
            return local_target(ModelSpec(id=spec.id, kind="local", location=str(self.embedded_folder())),
                                self.data_dir, self.dtype)
        if spec is not None and spec.kind != "upstream":
            return local_target(spec, self.data_dir, self.dtype)
        if spec is not None or model_id in self.agents():
            target = {"type": "endpoint", "id": model_id, "base_url": self.self_url(), "model": model_id,
                      "chat": True}
            return target | ({"api_key_env": self.api_key_env} if self.api_key_env else {})
        served = sorted([*self.specs(), *self.agents()])
        raise EvaluationRequestError(f"model {model_id!r} is not served here; served models: {served}",
                                     param="model", code="model_not_found")


def local_target(spec: ModelSpec, data_dir: Path, dtype: str = "auto") -> dict[str, Any]:
    from pipelines.embedded import embedded_model_folder

    folder = embedded_model_folder(data_dir) if spec.kind == "embedded" else Path(spec.location)
    target: dict[str, Any] = {"type": "local", "id": spec.id, "path": str(folder), "dtype": dtype}
    if spec.adapter:
        target["adapter"] = spec.adapter
    return target


def explicit_target(model: str | dict[str, Any], index: int) -> dict[str, Any] | None:
    """An endpoint named in the request itself: `{"base_url", "model", "api_key_env"?, "chat"?}`
    or `https://host/v1#model`; None for a plain model id (the resolver's business)."""
    param = f"models[{index}]"
    if isinstance(model, str):
        if not model.startswith(("http://", "https://")):
            return None
        base_url, _, name = model.partition("#")
        if not name:
            raise EvaluationRequestError(f"{model!r}: name the endpoint's model after '#', as in "
                                         "https://host/v1#model-name", param=param)
        model = {"base_url": base_url, "model": name}
    if not isinstance(model, dict):
        raise EvaluationRequestError("a model is an id, a URL#model, or {base_url, model}", param=param)
    unknown = set(model) - {"id", "base_url", "model", "api_key_env", "chat", "type"}
    if unknown:
        raise EvaluationRequestError(f"unknown model field(s) {sorted(unknown)}", param=param)
    if model.get("type") in ("local", "given"):  # given: the data carries the outputs (Evals API jsonl runs)
        return dict(model)
    base_url, name = model.get("base_url"), model.get("model")
    if not (isinstance(base_url, str) and base_url.startswith(("http://", "https://"))):
        raise EvaluationRequestError("an endpoint model needs base_url, an http(s) URL", param=f"{param}.base_url")
    if not (isinstance(name, str) and name):
        raise EvaluationRequestError("an endpoint model needs `model`, its name at the endpoint",
                                     param=f"{param}.model")
    key_env = model.get("api_key_env")
    if key_env is not None and not (isinstance(key_env, str) and key_env.replace("_", "").isalnum()):
        raise EvaluationRequestError("api_key_env names an environment variable (letters, digits, _), never a key",
                                     param=f"{param}.api_key_env")
    target = {"type": "endpoint", "id": model.get("id") or name, "base_url": base_url.rstrip("/"), "model": name,
              "chat": bool(model.get("chat", False))}
    return target | ({"api_key_env": key_env} if key_env else {})


# -- checking a request -------------------------------------------------------------------------


def run_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """The validated run settings; a key given as None takes its default."""
    if config is not None and not isinstance(config, dict):
        raise EvaluationRequestError("config is an object with limit, num_fewshot, seed, batch_size", param="config")
    try:
        given = {key: value for key, value in (config or {}).items() if value is not None}
        return EvaluationConfig(**given).model_dump()
    except ValidationError as error:
        first = error.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        raise EvaluationRequestError(f"config.{name}: {first['msg']}", param=f"config.{name}") from None


def check_tasks(tasks: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
    """The task specs as the worker will load them (file paths made absolute), each loaded once
    here so that a bad one is refused before anything queues. Slow for big files: in a thread."""
    from evaluation.requests import EvaluationError
    from evaluation.tasks import load_task

    if not tasks:
        raise EvaluationRequestError("name at least one task", param="tasks")
    checked: list[str | dict[str, Any]] = []
    for index, spec in enumerate(tasks):
        # The worker may run elsewhere than the caller's folder: a relative file path goes absolute.
        if isinstance(spec, str) and Path(spec).expanduser().is_file():
            spec = str(Path(spec).expanduser().resolve())
        elif isinstance(spec, dict) and isinstance(spec.get("path"), str) and Path(spec["path"]).expanduser().is_file():
            spec = {**spec, "path": str(Path(spec["path"]).expanduser().resolve())}
        try:
            load_task(spec)
        except EvaluationError as error:
            raise EvaluationRequestError(error.message, param=f"tasks[{index}]", code=error.code) from None
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise EvaluationRequestError(f"task {index} cannot be loaded: {error}", param=f"tasks[{index}]") from None
        checked.append(spec)
    return checked


# -- the worker side ------------------------------------------------------------------------------


def run(job: Job, reporter: Reporter) -> dict[str, Any] | None:
    return asyncio.run(_run_all(job, reporter))


async def _run_all(job: Job, reporter: Reporter) -> dict[str, Any] | None:
    from evaluation.models import open_model
    from evaluation.results import ResultStore
    from evaluation.runner import EvaluationCancelled, RunConfig, evaluate
    from evaluation.tasks import load_task

    params = job.params
    config = RunConfig(**params["config"])
    judges = _Judges(params.get("judges") or {})
    tasks = [tag_run_judge(load_task(spec), next(iter(judges.targets), None)) for spec in params["tasks"]]
    sizes = [len(task.samples(limit=config.limit, num_fewshot=config.num_fewshot, seed=config.seed)) for task in tasks]
    total = sum(sizes) * len(params["models"])
    path = results_path(reporter.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = ResultStore(path)
    results: list[dict[str, Any]] = []
    done_before = 0
    try:
        for target in params["models"]:
            model = await _maybe_await(open_model(target))
            try:
                for task, size in zip(tasks, sizes):
                    reporter.progress({"done": done_before, "total": total, "model": target["id"], "task": task.name})
                    result = await evaluate(
                        model, task, config, store, ctx=_scoring_context(judges),
                        progress=_progress(reporter, done_before, total, target["id"], task.name),
                        should_stop=reporter.stop_requested)
                    done_before += size
                    entry = _as_dict(result)
                    results.append(entry)
                    # An event, not a row of the step-metrics table: that one is the fine-tunes' loss curve.
                    reporter.store.add_event(job.id, _metrics_message(entry), type="metrics",
                                             data=_metrics_data(entry))
            finally:
                await model.close()
    except EvaluationCancelled:
        return None  # the worker records `cancelled`, or requeues after a shutdown
    finally:
        store.close()
        await judges.close()
    return {"results": results}


def tag_run_judge(task: Any, judge_id: str | None) -> Any:
    """`task`, its version marked with the run's judge when an `llm_judge` metric of it names no
    judge of its own: samples are cached per task version, and grades from another judge must
    not be reused as this one's."""
    if judge_id and _uses_run_judge(task):
        task.version = f"{task.version}+judge:{judge_id}"
    return task


def _uses_run_judge(task: Any) -> bool:
    subtasks = getattr(task, "tasks", None)  # a group: its members' metrics
    if subtasks is not None:
        return any(_uses_run_judge(member) for member in subtasks)
    metrics = getattr(getattr(task, "config", None), "metrics", None) or ()
    return any(metric.name == "llm_judge" and not metric.options.get("model") for metric in metrics)


def _progress(reporter: Reporter, before: int, total: int, model: str, task: str) -> Callable[[int, int], None]:
    def report(done: int, _task_total: int) -> None:
        reporter.progress({"done": before + done, "total": total, "model": model, "task": task})

    return report


def _as_dict(result: Any) -> dict[str, Any]:
    return result if isinstance(result, dict) else dataclasses.asdict(result)


def _metrics_data(entry: dict[str, Any]) -> dict[str, Any]:
    return {"model": entry["model"], "task": entry["task"], "samples": entry["samples"],
            "unparsed": entry["unparsed"], "cached": entry["cached"], "metrics": entry["metrics"]}


def format_metric(value: dict[str, Any]) -> str:
    stderr = value.get("stderr")
    if stderr is None or (isinstance(stderr, float) and math.isnan(stderr)):
        return f"{value['value']:.4f}"
    return f"{value['value']:.4f} ± {stderr:.4f}"


def _metrics_message(entry: dict[str, Any]) -> str:
    scores = ", ".join(f"{name} {format_metric(value)}" for name, value in entry["metrics"].items())
    return (f"{entry['model']} on {entry['task']}: {scores} ({entry['samples']} samples, "
            f"{entry['unparsed']} unparsed, {entry['cached']} from the cache)")


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future) else value


class _Judges:
    """Judge models by id, opened on first use and closed at the end of the job."""

    def __init__(self, targets: dict[str, dict[str, Any]]):
        self.targets = targets
        self.opened: dict[str, Any] = {}

    async def open(self, model_id: str) -> Any:
        from evaluation.models import open_model
        from evaluation.requests import EvaluationError

        target = self.targets.get(model_id)
        if target is None and not model_id and self.targets:  # "": the run's (first) configured judge
            target = next(iter(self.targets.values()))
        if target is None:
            raise EvaluationError(f"judge model {model_id!r} was not given to this evaluation (judges: "
                                  f"{sorted(self.targets)}); name it as the judge when creating the run",
                                  param="judge")
        if target["id"] not in self.opened:
            self.opened[target["id"]] = await _maybe_await(open_model(target))
        return self.opened[target["id"]]

    async def close(self) -> None:
        for model in self.opened.values():
            await model.close()
        self.opened.clear()


def _scoring_context(judges: _Judges) -> Any:
    from evaluation.tasks.base import ScoringContext

    return ScoringContext(judge=judges.open, execute=execute_in_sandbox)


async def execute_in_sandbox(code: str, timeout_s: float) -> tuple[bool, str]:
    """Run code in the python tool's sandbox: (it ended cleanly, what it printed)."""
    from tools.sandbox import SandboxLimits, run_python

    limits = SandboxLimits(cpu_s=max(1, math.ceil(timeout_s)), wall_s=max(1.0, timeout_s * 2))
    outcome = await asyncio.to_thread(run_python, code, limits)
    return outcome.error is None, outcome.stdout


# -- reading results back ---------------------------------------------------------------------------


def task_result(entry: dict[str, Any]) -> Any:
    """A TaskResult from the dict a job's result holds (for reports.compare and leaderboards)."""
    from evaluation.results import TaskResult

    return TaskResult.from_dict(entry)


def leaderboard_of(path: Path) -> Any | None:
    """The leaderboard of every finished model × task in the result store at `path`; None when
    nothing was evaluated yet. Reads SQLite: call it off the event loop."""
    from evaluation.reports import leaderboard
    from evaluation.results import ResultStore

    if not Path(path).is_file():
        return None
    store = ResultStore(Path(path))
    try:
        results = store.task_results()
    finally:
        store.close()
    return leaderboard(results) if results else None
