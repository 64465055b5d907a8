"""`agentd deploy | undeploy | deployments | deploy-adapter | undeploy-adapter`: deployments from the terminal.

Unlike `agentd finetune`, these talk to a running server over HTTP (like `agentd models`): a
deployment lives in the server process that loads the engine or owns the vLLM process, so only
that server can start, follow or stop it. `deploy` follows the load as it happens (the server's
SSE event stream), then prints the model id to chat with and a curl line that does.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Optional

import typer

BaseURL = Annotated[str, typer.Option(envvar="AGENTD_URL", help="Server to talk to.")]
ApiKey = Annotated[Optional[str], typer.Option(envvar="AGENTD_API_KEY", help="Bearer key.")]
DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("ready", "failed", "stopped")


class _Failed(Exception):
    """A request the server refused or could not be reached: the message is for the person."""


@contextmanager
def _http(base_url: str, api_key: Optional[str]) -> Iterator[Any]:
    import httpx

    root = base_url.rstrip("/").removesuffix("/v1")  # both `http://host:8000` and `…/v1` work
    key = api_key or os.environ.get("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # No read timeout: a vLLM launch may be quiet for minutes between log lines.
    with httpx.Client(base_url=f"{root}/v1", headers=headers, timeout=httpx.Timeout(30.0, read=None)) as client:
        try:
            yield client
        except httpx.TransportError as error:
            raise _Failed(f"cannot reach agentd at {root}: {error} "
                          "(is `agentd serve` running? see --base-url)") from None


def _checked(response: Any) -> dict[str, Any]:
    """The JSON body of a 2xx answer; otherwise `_Failed` with the server's own message."""
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        where = f" ({error['param']})" if error.get("param") else ""
        message = f"{error['message']}{where}"
    except (ValueError, KeyError, TypeError):
        message = response.text.strip() or response.reason_phrase
    raise _Failed(f"{response.status_code}: {message}")


@contextmanager
def _reported() -> Iterator[None]:
    """Turns a refusal into a red line and exit code 1, never a traceback."""
    try:
        yield
    except _Failed as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from None


def _adapter(text: str) -> str | dict[str, str]:
    """`ft:…` ids and folders go as they are; `NAME=FOLDER` names the adapter."""
    name, sep, path = text.partition("=")
    if sep and name and path and not text.startswith("ft:"):
        return {"name": name, "path": path}
    return text


def _keep_alive(text: Optional[str]) -> float | str | None:
    if text is None or text.lower() in ("none", "forever"):
        return None
    try:
        return float(text)
    except ValueError:
        return text  # "30s", "5m", "1h": the server parses and validates it


def _engine_args(items: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--engine-arg")
        try:
            parsed[key] = json.loads(value)  # numbers and booleans as such: gpu_memory_utilization=0.8
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def deploy(
    model: Annotated[str, typer.Argument(help="A served model id, a fine-tune `ft:...` id, or a model folder.")],
    engine: Annotated[str, typer.Option(help="auto (vLLM on a CUDA GPU when installed), embedded or vllm.")] = "auto",
    name: Annotated[Optional[str], typer.Option(help="The model id clients will send (default: from MODEL).")] = None,
    adapter: Annotated[Optional[list[str]], typer.Option(
        help="LoRA adapter to serve beside it, repeatable: an `ft:...` id, a folder, or NAME=FOLDER.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Weights dtype: auto, bfloat16, float16, float32.")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(min=1, help="Longest context (vLLM).")] = None,
    keep_alive: Annotated[Optional[str], typer.Option(
        help="Unload after this long unused: seconds or 30s / 5m / 1h (default: until undeployed).")] = None,
    engine_arg: Annotated[Optional[list[str]], typer.Option(
        help="More engine settings, repeatable: KEY=VALUE (e.g. quantization=awq, enforce_eager=true).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the load until the model is ready (or failed).")] = True,
    base_url: BaseURL = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Deploy (serve) a model on a running server; prints the model id to chat with."""
    body: dict[str, Any] = {"model": model, "engine": engine}
    optional = {"name": name, "dtype": dtype, "max_model_len": max_model_len,
                "adapters": [_adapter(a) for a in adapter or []], "engine_args": _engine_args(engine_arg or [])}
    body.update({key: value for key, value in optional.items() if value})
    if keep_alive is not None:
        body["keep_alive"] = _keep_alive(keep_alive)
    with _reported(), _http(base_url, api_key) as http:
        deployment = _checked(http.post("/deployments", json=body))
        typer.echo(f"deployment {deployment['id']}: {deployment['status']} on {deployment['engine']}")
        if not wait:
            return
        try:
            for event in _events(http, deployment["id"]):
                typer.echo(_event_line(event))
        except KeyboardInterrupt:
            typer.echo(f"stopped following; it keeps loading: `agentd deployments` shows it, "
                       f"`agentd undeploy {deployment['id']}` stops it")
            raise typer.Exit(130) from None
        deployment = _checked(http.get(f"/deployments/{deployment['id']}"))
        if deployment["status"] != "ready":
            raise _Failed(f"deployment {deployment['id']} is {deployment['status']}: "
                          f"{deployment.get('error') or 'no error recorded'}")
        _print_ready(deployment, str(http.base_url).rstrip("/"))


def _events(http: Any, deployment_id: str) -> Iterator[dict[str, Any]]:
    """The deployment's events as the server sends them (SSE); ends when the server ends the stream."""
    with http.stream("GET", f"/deployments/{deployment_id}/events") as response:
        if not response.is_success:
            response.read()
            _checked(response)
        for line in response.iter_lines():
            if line.startswith("data:"):
                payload = line[5:].strip()
                if not payload or payload == "[DONE]":
                    continue
                event = json.loads(payload)
                if "error" in event:  # e.g. undeployed from under the stream
                    raise _Failed(event["error"].get("message", str(event["error"])))
                yield event


def _event_line(event: dict[str, Any]) -> str:
    stamp = datetime.fromtimestamp(event["time"]).strftime("%H:%M:%S") if event.get("time") else "--:--:--"
    message = event.get("message") or event.get("status") or ""
    return f"{stamp} {event.get('type', 'event'):<10} {message}"


def _print_ready(deployment: dict[str, Any], v1_url: str) -> None:
    served = deployment["served_model"]
    typer.secho(f"ready: chat with model {served!r}", fg="green")
    for entry in deployment.get("adapters") or []:
        typer.echo(f"  adapter {entry['id']!r} (on {served})")
    if deployment.get("memory_bytes"):
        typer.echo(f"  memory {_size(deployment['memory_bytes'])}")
    request = json.dumps({"model": served, "messages": [{"role": "user", "content": "Hello!"}]})
    typer.echo(f"  try: curl {v1_url}/chat/completions -H 'Content-Type: application/json' -d '{request}'")


def undeploy(
    deployment: Annotated[str, typer.Argument(help="The deployment id (dep-...) or the model id it serves.")],
    base_url: BaseURL = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Stop a deployment: unloads the engine (or stops its vLLM process) and frees its memory."""
    with _reported(), _http(base_url, api_key) as http:
        deployment_id = _find(http, deployment)
        stopped = _checked(http.delete(f"/deployments/{deployment_id}"))
        typer.echo(f"deployment {stopped['id']} ({stopped['served_model']}): {stopped['status']}")


def _find(http: Any, wanted: str) -> str:
    """A deployment id from an id or a served model id (the live deployment that serves it)."""
    if wanted.startswith("dep-"):
        return wanted
    live = _checked(http.get("/deployments"))["data"]
    for deployment in live:
        if wanted in (deployment["served_model"], deployment["model"]):
            return deployment["id"]
        if any(adapter["id"] == wanted for adapter in deployment.get("adapters") or []):
            raise _Failed(f"{wanted} is an adapter of {deployment['id']} ({deployment['served_model']}): "
                          f"`agentd undeploy-adapter {deployment['id']} {wanted}` removes it")
    names = ", ".join(f"{d['id']} ({d['served_model']})" for d in live) or "none"
    raise _Failed(f"no running deployment with id or model {wanted!r}; deployments: {names}")


def deployments(
    all_: Annotated[bool, typer.Option("--all", help="Include stopped deployments.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The server's JSON, as it is.")] = False,
    base_url: BaseURL = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """List deployments: id, model, engine, status, memory, expiry, last error."""
    from rich.console import Console
    from rich.table import Table

    with _reported(), _http(base_url, api_key) as http:
        listed = _checked(http.get("/deployments", params={"all": "true"} if all_ else None))["data"]
    if as_json:
        typer.echo(json.dumps(listed, indent=2))
        return
    if not listed:
        typer.echo("no deployments" + ("" if all_ else " running (--all shows stopped ones)"))
        return
    table = Table("id", "model", "engine", "status", "memory", "expires", "error")
    colours = {"ready": "green", "failed": "red", "stopped": "dim"}
    for d in listed:
        models = d["served_model"] + "".join(f"\n└ {a['id']}" for a in d.get("adapters") or [])
        status = d["status"] + (f" ({d['restarts']} restarts)" if d.get("restarts") else "")
        table.add_row(d["id"], models, d["engine"], f"[{colours.get(d['status'], 'yellow')}]{status}[/]",
                      _size(d.get("memory_bytes")), _expiry(d.get("expires_at")), d.get("error") or "")
    Console(width=max(120, Console().width)).print(table)


def _size(size: Optional[int]) -> str:
    if not size:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


def _expiry(expires_at: Optional[float]) -> str:
    if not expires_at:
        return "never"
    left = expires_at - time.time()
    if left <= 0:
        return "now"
    minutes, seconds = divmod(int(left), 60)
    hours, minutes = divmod(minutes, 60)
    return f"in {hours}h {minutes}m" if hours else f"in {minutes}m {seconds}s" if minutes else f"in {seconds}s"


def deploy_adapter(
    deployment: Annotated[str, typer.Argument(help="The deployment id (dep-...) or the model id it serves.")],
    adapter: Annotated[str, typer.Argument(help="An `ft:...` id, an adapter folder, or NAME=FOLDER.")],
    base_url: BaseURL = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Add a LoRA adapter to a running deployment (no restart); it becomes its own model id."""
    with _reported(), _http(base_url, api_key) as http:
        deployment_id = _find(http, deployment)
        before = {a["id"] for a in _checked(http.get(f"/deployments/{deployment_id}")).get("adapters") or []}
        updated = _checked(http.post(f"/deployments/{deployment_id}/adapters", json={"adapter": _adapter(adapter)}))
    added = [a["id"] for a in updated.get("adapters") or [] if a["id"] not in before]
    typer.echo(f"deployment {updated['id']}: adapter {', '.join(added) or adapter} ready; chat with it as its model id")


def undeploy_adapter(
    deployment: Annotated[str, typer.Argument(help="The deployment id (dep-...) or the model id it serves.")],
    adapter_id: Annotated[str, typer.Argument(help="The adapter's model id.")],
    base_url: BaseURL = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Remove a LoRA adapter from a running deployment; the base model keeps serving."""
    with _reported(), _http(base_url, api_key) as http:
        deployment_id = _find(http, deployment)
        updated = _checked(http.delete(f"/deployments/{deployment_id}/adapters/{adapter_id}"))
    typer.echo(f"deployment {updated['id']}: adapter {adapter_id} removed")


def register(app: typer.Typer) -> None:
    """Adds the deployment commands to the `agentd` app."""
    app.command()(deploy)
    app.command()(undeploy)
    app.command()(deployments)
    app.command("deploy-adapter")(deploy_adapter)
    app.command("undeploy-adapter")(undeploy_adapter)
