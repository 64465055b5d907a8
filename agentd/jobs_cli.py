"""`agentd finetune` and `agentd jobs list|show|cancel|logs`: jobs from the terminal.

Both work on the data folder directly (the same SQLite job store a server on this machine
uses), so they need no running server; a server started later serves the fine-tuned models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

jobs_app = typer.Typer(help="Fine-tuning and other jobs in the data folder.", no_args_is_help=True)

DataDir = Annotated[Optional[Path], typer.Option(envvar="AGENTD_DATA_DIR", help="agentd's data folder.")]


def _data_dir(data_dir: Optional[Path]) -> Path:
    from agentd.config import Settings

    return data_dir or Settings().data_dir


@contextlib.contextmanager
def _service(data_dir: Optional[Path], base_folder: Optional[Path] = None) -> Iterator[Any]:
    """The jobs service on the data folder, its store closed on the way out; it runs no loop here."""
    from agentd.jobs.service import JobService

    service = JobService(_data_dir(data_dir), base_folder=(lambda _: base_folder) if base_folder else None)
    try:
        yield service
    finally:
        service.store.close()


def _base_folder(model: str, data_dir: Path) -> Path:
    from pipelines.embedded import EMBEDDED_MODEL_ID, embedded_model_folder

    if model in (EMBEDDED_MODEL_ID, "embedded"):
        return embedded_model_folder(data_dir)
    if (Path(model) / "config.json").is_file():
        return Path(model).resolve()
    raise typer.BadParameter(f"{model} is neither the embedded model ({EMBEDDED_MODEL_ID}) nor a transformers "
                             "model folder", param_hint="--model")


def finetune(
    data: Annotated[list[Path], typer.Option(help="Training data (JSONL or .txt), repeatable.")],
    model: Annotated[str, typer.Option(help="The embedded model's id or a model folder.")] = "smollm2-135m-instruct",
    method: Annotated[str, typer.Option(help="lora, qlora (CUDA only) or full.")] = "lora",
    validation: Annotated[Optional[list[Path]], typer.Option(help="Validation data, repeatable.")] = None,
    epochs: Annotated[Optional[float], typer.Option(
        help="Passes over the data (default: auto, from its size).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (overrides epochs).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(
        help="Peak learning rate (default: the method's, scaled by the batch size).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="Sequences per micro-batch (default: auto, ~0.2% of the examples, 1 for a small set).")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Tokens per packed row.")] = None,
    deepspeed: Annotated[Optional[str], typer.Option(help="zero1, zero2, zero2_offload, zero3, zero3_offload.")] = None,
    merge: Annotated[bool, typer.Option(help="Also export the adapter merged into the base.")] = False,
    suffix: Annotated[Optional[str], typer.Option(help="Part of the new model's id.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any other hyperparameter, KEY=JSON.")] = None,
    detach: Annotated[bool, typer.Option(help="Queue the job and return; a server or `agentd jobs` runs it.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Fine-tune a model on your data, with a progress bar; the result is a new model id."""
    from agentd.jobs.fine_tune import FineTuneRequestError

    root = _data_dir(data_dir)
    base = _base_folder(model, root)
    hyperparameters: dict[str, Any] = {"method": method}
    for key, value in (("n_epochs", epochs), ("max_steps", max_steps), ("learning_rate", learning_rate),
                       ("batch_size", batch_size), ("seq_len", seq_len), ("deepspeed", deepspeed)):
        if value is not None:
            hyperparameters[key] = value
    if merge:
        hyperparameters["merge"] = True
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            hyperparameters[key] = json.loads(value)
        except json.JSONDecodeError:
            hyperparameters[key] = value
    model_id = model if not Path(model).is_dir() else Path(model).resolve().name

    async def create(service) -> Any:
        job = await service.create_fine_tune(model=model_id, training_file=data, validation_file=validation or None,
                                             hyperparameters=hyperparameters, seed=seed, suffix=suffix)
        return await service.validated(job.id)

    with _service(root, base) as service:
        try:
            job = asyncio.run(create(service))
        except FineTuneRequestError as error:
            raise typer.BadParameter(str(error)) from None
        if job.status == "failed":
            typer.secho(f"{job.id}: {job.error['message']}", fg="red", err=True)
            raise typer.Exit(1)
        typer.echo(f"job {job.id} queued")
        if not detach:
            _run_and_follow(service.manager, job.id)


def follow(manager, job_id: str, show, poll_s: float = 0.5):
    """Runs the job in this process (unless a server on this data folder claimed it first: then
    just follows it), calling `show(job)` at each look until it ends, and returns the ended job.
    A job requeued after its worker died is started again (it resumes); Ctrl-C cancels it."""
    manager.launch(job_id)
    try:
        while True:
            job = manager.store.get(job_id)
            show(job)
            if job.finished:
                return job
            manager.tick_reap()
            if job.status == "queued":
                manager.launch(job_id)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        typer.echo("cancelling…")
        manager.cancel(job_id)
        while not manager.store.get(job_id).finished:
            manager.tick_reap()
            time.sleep(poll_s)
        return manager.store.get(job_id)


def _run_and_follow(manager, job_id: str) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    seen = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[stats]}"), TimeRemainingColumn()) as progress:
        bar = progress.add_task("training", total=None, stats="")

        def show(job) -> None:
            nonlocal seen
            for event in manager.store.events(job_id, after=seen):
                seen = event.seq
                if event.type == "message":
                    progress.console.print(f"[dim]{event.message}[/dim]")
            step = job.progress
            if step:
                progress.update(bar, total=step["total_steps"], completed=step["step"],
                                stats=f"loss {step['loss']:.4f}  {step['tokens_per_second']:.0f} tok/s")

        job = follow(manager, job_id, show)
    _print_outcome(manager.store, job)
    if job.status != "succeeded":
        raise typer.Exit(1)


def _print_outcome(store, job) -> None:
    typer.echo(f"{job.id}: {job.status}")
    if job.error:
        typer.secho(f"  error: {job.error['message']}", fg="red")
    curve = store.metrics(job.id)
    if curve:
        losses = [entry["train_loss"] for entry in curve]
        best = min(range(len(losses)), key=losses.__getitem__)
        typer.echo(f"  loss {losses[0]:.4f} → {losses[-1]:.4f} over {len(losses)} steps "
                   f"(lowest {losses[best]:.4f} at step {curve[best]['step']})")
        if "valid_loss" in curve[-1]:
            typer.echo(f"  validation loss {curve[-1]['valid_loss']:.4f}")
    if job.result and job.kind == "evaluation":
        from agentd.jobs.evaluate import format_metric

        for result in job.result.get("results", []):
            scores = ", ".join(f"{name} {format_metric(m)}" for name, m in result["metrics"].items())
            typer.echo(f"  {result['model']} on {result['task']}: {scores}")
    elif job.result:
        typer.echo(f"  new model: {job.result['fine_tuned_model']}  (served by `agentd serve` on this data folder)")
        for name, folder in (("adapter", job.result.get("adapter_dir")), ("model", job.result.get("model_dir"))):
            if folder:
                typer.echo(f"  {name}: {folder}")


@jobs_app.command("list")
def list_jobs(status: Annotated[Optional[str], typer.Option(help="Only this status.")] = None,
              limit: Annotated[int, typer.Option(help="How many.")] = 20, data_dir: DataDir = None) -> None:
    """Jobs, newest first."""
    with _service(data_dir) as service:
        jobs = service.list(statuses=(status,) if status else (), limit=limit)
    for job in jobs:
        created = datetime.fromtimestamp(job.created_at).strftime("%Y-%m-%d %H:%M")
        detail = (job.result or {}).get("fine_tuned_model") or (job.error or {}).get("message", "")
        if job.status == "running" and job.progress and job.kind == "evaluation":
            detail = f"{job.progress.get('done', 0)}/{job.progress.get('total', '?')} samples"
        elif job.status == "running" and job.progress:
            detail = f"step {job.progress['step']}/{job.progress['total_steps']} loss {job.progress['loss']:.4f}"
        typer.echo(f"{job.id}\t{job.status}\t{created}\t{_models(job)}\t{detail}")


def _models(job) -> str:
    if job.kind == "evaluation":
        return ",".join(str(model.get("id")) for model in job.params.get("models", []))
    return job.params.get("model", "")


@jobs_app.command()
def show(job_id: str, data_dir: DataDir = None) -> None:
    """One job: status, parameters, progress, result, error, and a loss summary."""
    from agentd.jobs import JobNotFound

    with _service(data_dir) as service:
        store = service.store
        try:
            job = store.get(job_id)
        except JobNotFound as error:
            raise typer.BadParameter(str(error)) from None
        typer.echo(json.dumps({"id": job.id, "kind": job.kind, "status": job.status, "attempts": job.attempts,
                               "params": job.params, "progress": job.progress, "result": job.result,
                               "error": job.error, "checkpoints": [c["step"] for c in store.checkpoints(job.id)],
                               "artifacts": store.artifacts(job.id)},
                              indent=2))
        _print_outcome(store, job)


@jobs_app.command()
def cancel(job_id: str, data_dir: DataDir = None) -> None:
    """Cancel a queued or running job (a running one stops at its next step)."""
    from agentd.jobs import JobNotFound

    with _service(data_dir) as service:
        try:
            job = service.cancel(job_id)
        except JobNotFound as error:
            raise typer.BadParameter(str(error)) from None
    typer.echo(f"{job.id}: {job.status}{' (cancellation requested)' if job.cancel_requested else ''}")


@jobs_app.command()
def logs(job_id: str, lines: Annotated[int, typer.Option(help="Last lines to show.")] = 200,
         data_dir: DataDir = None) -> None:
    """The worker's log (every attempt), then the job's events."""
    from agentd.jobs import JobNotFound

    with _service(data_dir) as service:
        try:
            service.get(job_id)
        except JobNotFound as error:
            raise typer.BadParameter(str(error)) from None
        typer.echo(service.manager.log_tail(job_id, lines))
        events = service.store.events(job_id, limit=10_000)
    for event in events:
        if event.type == "message":
            stamp = datetime.fromtimestamp(event.created_at).strftime("%H:%M:%S")
            typer.echo(f"{stamp} [{event.level}] {event.message}")
