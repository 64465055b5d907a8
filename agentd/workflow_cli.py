"""`agentd workflow tune-and-evaluate`: the server's `tune_and_evaluate` tool from the terminal.

It runs the same tool an agent calls for "fine-tune smollm2 on my tickets and tell me which is
better" (`POST /v1/tools/tune_and_evaluate`), on a running server, because deploying needs the
server that serves. A local training file is uploaded first (so the server may be elsewhere);
while the tool runs, the jobs it starts are followed through the `list_jobs` tool and printed
as stages; the end is the summary and the table of scores ± standard errors.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from agentd.deploy_cli import DEFAULT_URL, ApiKey, _checked, _Failed, _http, _reported

workflow_app = typer.Typer(help="Workflows the server runs as one tool (the same an agent calls).",
                           no_args_is_help=True)
URL = Annotated[str, typer.Option("--base-url", "--url", envvar="AGENTD_URL", help="Server to talk to.")]
_STAGES = {"fine_tune": "fine-tune", "evaluation": "evaluate"}


@workflow_app.command("tune-and-evaluate")
def tune_and_evaluate(
    training_file: Annotated[str, typer.Option(
        help="Training data: a local JSONL file (uploaded), a path on the server, or a file id (file-...).")],
    model: Annotated[str, typer.Option(
        help="Served model to start from: its id or a name such as smollm2.")] = "smollm2",
    task: Annotated[Optional[list[str]], typer.Option(
        help="Evaluation task, repeatable (support_qa, arc_easy, a task file on the server); "
             "none: a held-out fifth of the training file.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Score only the first N samples of each task.")] = None,
    method: Annotated[str, typer.Option(help="lora, qlora (CUDA only) or full.")] = "lora",
    max_steps: Annotated[Optional[int], typer.Option(
        min=1, help="Stop training after N optimizer steps (default: epochs chosen from the data's size).")] = None,
    deploy_better: Annotated[bool, typer.Option(help="Deploy the better model at the end.")] = False,
    max_wait_s: Annotated[float, typer.Option(help="Longest wait per stage, in seconds.")] = 7200.0,
    base_url: URL = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Fine-tune a model, evaluate it and its base on the same tasks, say which is better (and deploy it)."""
    with _reported():
        with _http(base_url, api_key) as http:
            arguments: dict[str, Any] = {"model": model, "training_file": _uploaded(http, training_file),
                                         "method": method, "deploy_better": deploy_better, "max_wait_s": max_wait_s}
            arguments |= {key: value for key, value in (("tasks", task), ("limit", limit), ("max_steps", max_steps))
                          if value}
            before = {job["job_id"] for job in _jobs(http)}
            outcome: dict[str, Any] = {}
            call = threading.Thread(target=_call, args=(base_url, api_key, arguments, outcome), daemon=True)
            call.start()
            shown: dict[str, Any] = {}
            while call.is_alive():
                _show_new_jobs(http, before, shown)
                call.join(timeout=1.0)
            _show_new_jobs(http, before, shown)
        if "failed" in outcome or "result" not in outcome:
            raise outcome.get("failed") or _Failed("the workflow ended without a result")
        _print_result(outcome["result"])


def _uploaded(http: Any, training_file: str) -> str:
    """A file on this machine goes up as a fine-tune file; anything else is the server's to read."""
    path = Path(training_file).expanduser()
    if training_file.startswith("file-") or not path.is_file():
        return training_file
    with path.open("rb") as handle:
        uploaded = _checked(http.post("/files", data={"purpose": "fine-tune"},
                                      files={"file": (path.name, handle, "application/jsonl")}))
    typer.echo(f"uploaded {path} as {uploaded['id']}")
    return uploaded["id"]


def _call(base_url: str, api_key: Optional[str], arguments: dict[str, Any], outcome: dict[str, Any]) -> None:
    # Its own connection: the main thread keeps polling the jobs meanwhile.
    try:
        with _http(base_url, api_key) as http:
            body = _checked(http.post("/tools/tune_and_evaluate", json=arguments))
        if body["is_error"]:
            raise _Failed(body["error"]["message"])
        outcome["result"] = next(part["json"] for part in body["content"] if part["type"] == "json")
    except _Failed as error:
        outcome["failed"] = error
    except Exception as error:  # noqa: BLE001 - said once, in the terminal, without a traceback
        outcome["failed"] = _Failed(f"{type(error).__name__}: {error}")


def _jobs(http: Any) -> list[dict[str, Any]]:
    body = _checked(http.post("/tools/list_jobs", json={"limit": 5}))
    return next((part["json"] for part in body["content"] if part["type"] == "json"), [])


def _show_new_jobs(http: Any, before: set[str], shown: dict[str, Any]) -> None:
    """One line per change of a job started since the command began."""
    for job in reversed(_jobs(http)):
        if job["job_id"] in before:
            continue
        line = _job_line(job)
        if shown.get(job["job_id"]) != line:
            shown[job["job_id"]] = line
            typer.echo(line)


def _job_line(job: dict[str, Any]) -> str:
    stage = _STAGES.get(job.get("kind", ""), job.get("kind", "job"))
    progress = job.get("progress") or {}
    if job["status"] == "running" and "step" in progress:
        loss = f" loss {progress['loss']:.4f}" if isinstance(progress.get("loss"), float) else ""
        detail = f"step {progress['step']}/{progress.get('total_steps', '?')}{loss}"
    elif job["status"] == "running" and "done" in progress:
        detail = (f"{progress['done']}/{progress.get('total', '?')} samples "
                  f"({progress.get('model')} · {progress.get('task')})")
    elif job.get("fine_tuned_model"):
        detail = f"{job['status']}: {job['fine_tuned_model']}"
    else:
        detail = job["status"] + (f": {job['error']}" if job.get("error") else "")
    return f"[{stage}] {job['job_id']} {detail}"


def _print_result(result: dict[str, Any]) -> None:
    typer.echo("")
    if result.get("table"):
        typer.echo(result["table"])
        typer.echo("")
    typer.secho(result.get("summary") or "", bold=True)
    if result.get("note"):
        typer.secho(result["note"], fg="yellow")
    jobs = f"fine-tune job {result.get('fine_tune_job')}, evaluation job {result.get('evaluation_job')}"
    typer.echo(f"{jobs}; tuned model {result.get('tuned_model')}")
    if result.get("deployed"):
        typer.echo(f"deployed: {json.dumps(result['deployed'])}")


def register(app: typer.Typer) -> None:
    app.add_typer(workflow_app, name="workflow")
