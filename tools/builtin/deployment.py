"""`deploy`, `undeploy`, `list_deployments`: serving models as tools an agent can call.

`deploy` creates a deployment through the deployments service (the same one `POST
/v1/deployments` and `agentd deploy` use) and, when asked to wait, reports each load event as
progress until the model is ready or failed; the answer names the model id to chat with, which
is what an agent needs for its next step ("deploy my fine-tune, then ask it …").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from tools.base import ToolError
from tools.builtin.choices import Duration, Wait
from tools.builtin.model_names import UnknownModel, resolve_if_known, served_by_deployments
from tools.context import ToolContext
from tools.decorator import Toolkit, tool
from tools.schema import said_as

if TYPE_CHECKING:
    from agentd.deployments import Deployment, DeploymentService

MAX_WAIT_S = 3600
_TIMEOUT_S = MAX_WAIT_S + 120  # the longest wait plus validating the request before it
_TERMINAL = ("ready", "failed", "stopped")


class DeploymentTools(Toolkit):
    """The deployments service's tools; the service belongs to whoever made it (the server)."""

    def __init__(self, service: DeploymentService):
        self.service = service

    @tool(long_running=True, timeout=_TIMEOUT_S)
    async def deploy(self, model: str, ctx: ToolContext,
                     engine: Annotated[Literal["auto", "embedded", "vllm"], said_as(
                         embedded=["built-in", "builtin", "built in", "in-process", "local engine"])] = "auto",
                     adapters: Annotated[list[str], Field(max_length=16)] = [],  # noqa: B006 (pydantic copies it)
                     keep_alive: float | Duration | None = None,
                     wait: Wait = True,
                     max_wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT_S)] = 900.0) -> dict:
        """Deploy (serve) a model so it can be chatted with; the answer gives the model id to use.

        Args:
            model: what to serve: a model id (or a name such as smollm2), a fine-tuned model id (ft:...), or a model folder.
            engine: auto picks vLLM on a GPU machine, else the embedded engine; or force embedded / vllm.
            adapters: LoRA adapters to serve on top of it (fine-tune ids ft:... or adapter folders).
            keep_alive: unload it after this long unused, in seconds or like "30s", "5m", "1h" (default: never).
            wait: wait until it is ready, reporting progress; false returns at once while it loads.
            max_wait_s: the longest to wait before returning (loading goes on).
        """
        from agentd.deployments import DeploymentError

        if not Path(model).expanduser().is_dir():  # a model folder is the service's to check
            with contextlib.suppress(UnknownModel):  # the service says what is deployable instead
                model = resolve_if_known(model, served_by_deployments(self.service))
        try:
            deployment = await self.service.create(model=model, engine=engine, adapters=list(adapters),
                                                   keep_alive=keep_alive)
        except DeploymentError as error:
            raise ToolError(str(error)) from None
        if not wait:
            return deployment_summary(deployment)
        deployment = await self._follow(deployment, ctx, max_wait_s)
        if deployment.status == "failed":
            raise ToolError(f"deployment {deployment.id} of {model} failed: {deployment.error or 'no error recorded'}")
        summary = deployment_summary(deployment)
        if deployment.status not in _TERMINAL:
            summary["note"] = (f"{deployment.served_id} is still {deployment.status} after waiting {max_wait_s:g} s "
                               "and keeps loading; check it with list_deployments()")
        return summary

    async def _follow(self, deployment: Deployment, ctx: ToolContext, max_wait_s: float) -> Deployment:
        return await follow_deployment(self.service, deployment, ctx, max_wait_s)

    @tool
    async def undeploy(self, deployment: str) -> dict:
        """Stop serving a deployed model (or one adapter of it) and free its memory.

        Args:
            deployment: the deployment id (dep-...) or the model id it serves (an adapter's id: only that adapter).
        """
        from agentd.deployments import DeploymentError

        live = self.service.list()
        try:
            for found in live:
                if deployment in found.adapters:  # the base and its other adapters keep serving
                    return deployment_summary(await self.service.remove_adapter(found.id, deployment))
            for found in live:
                if deployment in (found.id, found.served_id, found.model):
                    return deployment_summary(await self.service.delete(found.id))
            if deployment.startswith("dep-"):  # a stopped one, or none: the service says which
                return deployment_summary(await self.service.delete(deployment))
        except DeploymentError as error:
            raise ToolError(str(error)) from None
        names = ", ".join(f"{d.id} ({', '.join([d.served_id, *d.adapters])})" for d in live) or "none"
        raise ToolError(f"no running deployment with id or model {deployment!r}; running: {names}")

    @tool(changing=True)
    def list_deployments(self, include_stopped: Annotated[bool, said_as(true=[
            "stopped", "including", "included", "history", "all", "every", "ever", "finished", "undeployed",
            "expired"], surely={"true": ["stopped", "including", "history", "undeployed", "expired",
                                         "ever deployed", "ever served"]})] = False) -> list[dict]:
        """List deployed (served) models: id, model id to chat with, engine, status, memory, error.

        Args:
            include_stopped: also list deployments that were undeployed or expired.
        """
        return [deployment_summary(d) for d in self.service.list(include_stopped=include_stopped)]


async def follow_deployment(service: DeploymentService, deployment: Deployment, ctx: ToolContext,
                            max_wait_s: float, **extra: Any) -> Deployment:
    """Reports each event as progress (with `extra`) until a terminal status or the wait runs out."""
    deadline = time.monotonic() + max_wait_s

    async def relay() -> None:
        async with contextlib.aclosing(service.follow(deployment.id)) as events:
            async for event in events:
                ctx.report_progress(**extra, deployment_id=deployment.id, event=event.get("type"),
                                    message=event.get("message", ""))

    try:
        await asyncio.wait_for(relay(), timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        pass  # the load goes on; the caller says so
    return service.get(deployment.id)


def deployment_summary(deployment: Deployment) -> dict[str, Any]:
    """What an agent needs: the model id to chat with first, then the state."""
    summary: dict[str, Any] = {"deployment_id": deployment.id, "model": deployment.served_id,
                               "engine": deployment.engine, "status": deployment.status}
    if deployment.adapters:
        summary["adapter_models"] = sorted(deployment.adapters)
    if deployment.memory_bytes:
        summary["memory_mb"] = round(deployment.memory_bytes / 2**20, 1)
    if deployment.keep_alive_s is not None:
        summary["keep_alive_s"] = deployment.keep_alive_s
    if deployment.error:
        summary["error"] = deployment.error
    if deployment.status == "ready":
        summary["chat_with"] = f"send requests with model={deployment.served_id!r}"
    return summary
