"""The `agentd` command: serve, chat, models, tools, finetune, eval, jobs, deploy, undeploy, deployments, workflow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from agentd.deploy_cli import register as register_deploy_commands
from agentd.eval_cli import evaluate
from agentd.jobs_cli import finetune, jobs_app
from agentd.tools_cli import tools_app
from agentd.workflow_cli import register as register_workflow_commands

app = typer.Typer(help="agentd: an agent-centric orchestration server for language models.",
                  no_args_is_help=True)
app.add_typer(tools_app, name="tools")
app.add_typer(jobs_app, name="jobs")
app.command()(finetune)
app.command("eval")(evaluate)
register_deploy_commands(app)
register_workflow_commands(app)

BaseURL = Annotated[str, typer.Option(envvar="AGENTD_URL", help="Server to talk to.")]
ApiKey = Annotated[Optional[str], typer.Option(envvar="AGENTD_API_KEY", help="Bearer key.")]


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Interface to bind.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to bind.")] = None,
    model: Annotated[Optional[list[str]], typer.Option(
        help="Model to serve, repeatable: `embedded`, PATH, ID=PATH or ID=URL#upstream-model.")] = None,
    upstream_api_key: Annotated[Optional[list[str]], typer.Option(
        help="Bearer key for an upstream model, repeatable: ID=KEY. AGENTD_UPSTREAM_API_KEYS keeps it out of `ps`.")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option(help="Accepted API key, repeatable.")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(help="Allowed CORS origin, repeatable.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where converted models and state live.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="torch dtype for local models.")] = None,
    engine: Annotated[Optional[str], typer.Option(
        help="Engine for local models: openvino (default: paged KV cache, prefix caching, chunked prefill) "
             "or transformers (eager PyTorch).")] = None,
    tools: Annotated[Optional[list[str]], typer.Option(help="Python file with @tool functions, repeatable.")] = None,
    remote_tools: Annotated[Optional[list[str]], typer.Option(help="Tool server URL to import, repeatable.")] = None,
    mcp: Annotated[Optional[list[str]], typer.Option(help="MCP server URL or command to import, repeatable.")] = None,
    no_builtin_tools: Annotated[bool, typer.Option(help="Leave out calculator, python, knowledge_*.")] = False,
    agent_model: Annotated[Optional[str], typer.Option(help="Served model the agents think with (default: the first).")] = None,
    no_tool_use_adapter: Annotated[bool, typer.Option(
        help="Agents on the embedded model think without the shipped tool-use adapter.")] = False,
    image_pipeline: Annotated[Optional[Path], typer.Option(
        help="Local diffusers pipeline folder (saved with save_pretrained) that text_to_image draws with.")] = None,
) -> None:
    """Serve the OpenAI-compatible API, the tools (`/v1/tools`) and MCP (`/mcp`)."""
    import uvicorn
    from pydantic import ValidationError

    from agentd.config import Settings
    from agentd.server.app import create_app

    flags = {"host": host, "port": port, "models": model, "upstream_api_keys": upstream_api_key, "api_keys": api_key,
             "cors_origins": cors_origin, "data_dir": data_dir, "dtype": dtype, "engine": engine, "tools": tools,
             "remote_tools": remote_tools, "mcp_servers": mcp, "agent_model": agent_model,
             "image_pipeline": image_pipeline}
    switched_off = {"builtin_tools": not no_builtin_tools, "tool_use_adapter": not no_tool_use_adapter}
    try:
        settings = Settings(**{k: v for k, v in flags.items() if v},
                            **{k: False for k, on in switched_off.items() if not on})
        application = create_app(settings)
    except ValidationError as error:  # a flag's or an AGENTD_ variable's value: say which, without a traceback
        raise typer.BadParameter("; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')} (or AGENTD_"
                                           f"{'_'.join(map(str, e['loc'])).upper()}): {e['msg']}"
                                           for e in error.errors())) from error
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="info")


def _client(base_url: str, api_key: Optional[str]):
    from openai import OpenAI

    return OpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key or os.environ.get("OPENAI_API_KEY", "none"))


@app.command()
def models(base_url: BaseURL = "http://127.0.0.1:8000", api_key: ApiKey = None) -> None:
    """List the models a server offers."""
    for entry in _client(base_url, api_key).models.list():
        typer.echo(f"{entry.id}\t{entry.owned_by}")


@app.command()
def chat(
    model: Annotated[str, typer.Option(help="Model id.")] = "smollm2-135m-instruct",
    base_url: BaseURL = "http://127.0.0.1:8000",
    api_key: ApiKey = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.7,
) -> None:
    """Chat in the terminal; answers stream. An empty line or Ctrl-D ends it."""
    import openai

    client = _client(base_url, api_key)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not line:
            break
        history.append({"role": "user", "content": line})
        answer = ""
        typer.echo("model> ", nl=False)
        try:
            for chunk in client.chat.completions.create(
                model=model, messages=history, stream=True, max_tokens=max_tokens,
                temperature=temperature,
            ):
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                # Agent models stream their steps as reasoning_content: show them dimmed.
                reasoning = (delta.model_extra or {}).get("reasoning_content")
                if reasoning:
                    typer.secho(reasoning, nl=False, dim=True)
                if delta.content:
                    answer += delta.content
                    typer.echo(delta.content, nl=False)
        except openai.APIError as error:
            typer.echo(f"\nerror: {error}", err=True)
            history.pop()
            continue
        typer.echo()
        history.append({"role": "assistant", "content": answer})


if __name__ == "__main__":
    app()
