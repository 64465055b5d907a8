"""`agentd eval`: evaluate models on benchmark tasks from the terminal, as a job on the data folder.

Like `agentd finetune`, it needs no server: the run is a durable job in the data folder's job
store (a server started on the same folder would show it), its samples cached in the shared
result store, so an interrupted or repeated run costs only what was not scored yet. It shows a
progress bar, then a table of each score ± its standard error, and writes JSON, CSV and
markdown into `--output`; with two models, a comparison that says which differences are noise.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from agentd.jobs_cli import DataDir, _data_dir


def evaluate(
    model: Annotated[Optional[list[str]], typer.Option(
        help="Model to evaluate, repeatable: the embedded model's id, a model folder, a fine-tune `ft:...`, "
             "or with --base-url a model name at that endpoint.")] = None,
    task: Annotated[Optional[list[str]], typer.Option(
        help="Task, repeatable: a built-in name (see --list-tasks) or a task file (.jsonl, .csv, .json, .yaml)."
    )] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Score only the first N samples of each task.")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option(min=0, help="Few-shot examples (default: the task's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for few-shot sampling and generation.")] = 1234,
    batch_size: Annotated[int, typer.Option(min=1, help="Requests per batch; scores do not depend on it.")] = 8,
    base_url: Annotated[Optional[str], typer.Option(
        help="An OpenAI-compatible endpoint (…/v1) serving the --model names.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(
        help="Environment variable holding the endpoint's API key.")] = None,
    chat: Annotated[bool, typer.Option(help="Generate through the endpoint's chat API.")] = False,
    judge: Annotated[Optional[str], typer.Option(help="Judge model for LLM-as-judge metrics.")] = None,
    output: Annotated[Path, typer.Option(
        help="Folder for results.json, results.csv and results.md.")] = Path("eval-results"),
    list_tasks: Annotated[bool, typer.Option("--list-tasks", help="List the built-in tasks and exit.")] = False,
    detach: Annotated[bool, typer.Option(
        help="Queue the job and return; a server or a later run picks it up.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Evaluate models on benchmark tasks, with a progress bar and scores ± standard errors."""
    from agentd.jobs.evaluate import EvaluationRequestError
    from agentd.jobs.service import JobService

    if list_tasks:
        _print_tasks()
        return
    if not model or not task:
        raise typer.BadParameter("give at least one --model and one --task (or --list-tasks)")
    if api_key_env and not base_url:
        raise typer.BadParameter("--api-key-env goes with --base-url", param_hint="--api-key-env")
    root = _data_dir(data_dir)
    config = {"limit": limit, "num_fewshot": num_fewshot, "seed": seed, "batch_size": batch_size}
    service = JobService(root)
    service.model_target = _resolver(service, root, base_url, api_key_env, chat)
    try:
        try:
            job = asyncio.run(service.create_evaluation(models=model, tasks=task, config=config, judge=judge))
        except EvaluationRequestError as error:
            typer.secho(f"{error.param}: {error}" if error.param else str(error), fg="red", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"job {job.id} queued")
        if detach:
            return
        job = _run_and_follow(service.manager, job.id)
    finally:
        service.store.close()
    if job.status != "succeeded":
        typer.secho(f"{job.id}: {job.status}" + (f": {job.error['message']}" if job.error else ""), fg="red", err=True)
        raise typer.Exit(1)
    _report(job, output)


def _resolver(service: Any, root: Path, base_url: str | None, api_key_env: str | None, chat: bool):
    """What `--model` means on the command line (no server: the data folder and the flags)."""
    from agentd.jobs.evaluate import EvaluationRequestError, local_target
    from pipelines.embedded import EMBEDDED_MODEL_ID
    from pipelines.registry import ModelSpec

    def target(model: str) -> dict[str, Any]:
        if base_url:
            found = {"type": "endpoint", "id": model, "base_url": base_url.rstrip("/"), "model": model, "chat": chat}
            return found | ({"api_key_env": api_key_env} if api_key_env else {})
        if model in (EMBEDDED_MODEL_ID, "embedded"):
            return local_target(ModelSpec(id=EMBEDDED_MODEL_ID, kind="embedded"), root)
        folder = Path(model).expanduser()
        if (folder / "config.json").is_file():
            return local_target(ModelSpec(id=folder.resolve().name, kind="local", location=str(folder.resolve())), root)
        spec = service.model_spec(model)  # a fine-tune made on this data folder
        if spec is not None:
            return local_target(spec, root)
        raise EvaluationRequestError(f"{model} is not the embedded model ({EMBEDDED_MODEL_ID}), a model folder or a "
                                     "fine-tune of this data folder; for a served model give --base-url",
                                     param="--model")

    return target


def _print_tasks() -> None:
    from rich.console import Console
    from rich.table import Table

    from evaluation.tasks import builtin_tasks, load_task

    table = Table("task", "type", "few-shot", "metrics", "samples", "version")
    for name in builtin_tasks():
        described = load_task(name).describe()
        metrics = described.get("metrics", [])
        table.add_row(name, str(described.get("output_type", "")), str(described.get("num_fewshot", "")),
                      ", ".join(metrics) if isinstance(metrics, list) else str(metrics),
                      str(described.get("samples", described.get("n_samples", ""))), str(described.get("version", "")))
    Console().print(table)


def _run_and_follow(manager: Any, job_id: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from agentd.jobs_cli import follow

    seen = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn()) as progress:
        bar = progress.add_task("loading", total=None)

        def show(job: Any) -> None:
            nonlocal seen
            for event in manager.store.events(job_id, after=seen):
                seen = event.seq
                if event.type == "metrics":
                    progress.console.print(event.message)
                elif event.level in ("warning", "error"):
                    progress.console.print(f"[yellow]{event.message}[/yellow]")
            state = job.progress
            if state.get("total"):
                label = f"{state['model']} · {state['task']}" if state.get("task") else "done"
                progress.update(bar, total=state["total"], completed=state["done"], description=label)

        return follow(manager, job_id, show, poll_s=0.3)


def _report(job: Any, output: Path) -> None:
    """The table of scores, the comparison of two models, and the three files."""
    from rich.console import Console
    from rich.table import Table

    from agentd.jobs.evaluate import format_metric, task_result
    from evaluation.reports import compare, leaderboard

    entries = job.result["results"]
    models = [target["id"] for target in job.params["models"]]
    table = Table("task", "metric", title=f"{job.id}: scores ± standard error")
    for name in models:
        table.add_column(name, no_wrap=True)  # a score and its error stay on one line
    by_key = {(entry["model"], entry["task"]): entry for entry in entries}
    for task_name in dict.fromkeys(entry["task"] for entry in entries):
        metric_names = dict.fromkeys(name for m in models for name in by_key.get((m, task_name), {}).get("metrics", {}))
        for metric in metric_names:
            cells = []
            for m in models:
                value = by_key.get((m, task_name), {}).get("metrics", {}).get(metric)
                cells.append(format_metric(value) if value else "—")
            table.add_row(task_name, metric, *cells)
    console = Console()
    console.print(table)
    unparsed = [entry for entry in entries if entry["unparsed"]]
    for entry in unparsed:
        console.print(f"[yellow]{entry['model']} on {entry['task']}: {entry['unparsed']} of {entry['samples']} "
                      "outputs could not be parsed[/yellow]")

    results = [task_result(entry) for entry in entries]
    comparisons = []
    if len(models) == 2:
        first = {r.task: r for r in results if r.model == models[0]}
        second = {r.task: r for r in results if r.model == models[1]}
        for task_name, result in first.items():
            if task_name in second:
                comparison = compare(result, second[task_name])
                comparisons.append(comparison)
                console.print(_comparison_text(comparison))

    board = leaderboard(results)
    output.mkdir(parents=True, exist_ok=True)
    payload = {"job_id": job.id, "config": job.params["config"], "results": entries,
               "comparisons": [_comparison_json(c) for c in comparisons]}
    (output / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    (output / "results.csv").write_text(board.csv())
    markdown = board.markdown()
    if comparisons:
        markdown += "\n\n## Comparison\n\n" + "\n".join(f"- {_comparison_text(c)}" for c in comparisons) + "\n"
    (output / "results.md").write_text(markdown)
    console.print(f"wrote {output / 'results.json'}, {output / 'results.csv'}, {output / 'results.md'}")


def _comparison_json(comparison: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(comparison) if dataclasses.is_dataclass(comparison) else comparison.json()


def _comparison_text(comparison: Any) -> str:
    return comparison.text() if hasattr(comparison, "text") else str(comparison)
