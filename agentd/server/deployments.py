"""The deployments API: create, list, retrieve, follow (SSE), undeploy, and adapters of a running deployment.

Handlers are thin: `app.state.deployments` (agentd.deployments.DeploymentService) validates and
does the work; its DeploymentError leaves as an OpenAI-shaped error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from sse_starlette import EventSourceResponse

from agentd.deployments import DeploymentError
from agentd.server.errors import APIError, error_body


# Beyond the 400/404 every route may send (agentd.server.openapi).
_CONFLICT = {409: {"description": "The id is already served, or the deployment is not ready"}}
# 422, not 5xx: clients (the openai SDK among them) retry a 5xx, and a retried POST launches again.
_LAUNCH = {**_CONFLICT, 422: {"description": "With ?wait=true: the launch failed; the message says why"}}


class AdapterObject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1)
    path: str = Field(min_length=1)


class DeploymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    engine: Literal["auto", "embedded", "vllm"] = "auto"
    name: str | None = Field(None, min_length=1)
    adapters: list[str | AdapterObject] = Field(default_factory=list)
    dtype: str | None = None
    max_model_len: int | None = Field(None, ge=1)
    # Strict: pydantic would otherwise read `true` as 1 second and unload the model at once.
    keep_alive: StrictInt | StrictFloat | StrictStr | None = None
    engine_args: dict[str, Any] | None = None


class AdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adapter: str | AdapterObject


def _adapter(value: str | AdapterObject) -> str | dict[str, Any]:
    return value if isinstance(value, str) else value.model_dump(exclude_none=True)


def install_deployment_errors(app: FastAPI) -> None:
    """DeploymentError from any route (or tool endpoint) leaves in OpenAI's error shape."""

    @app.exception_handler(DeploymentError)
    async def _deployment_error(_: Request, error: DeploymentError) -> JSONResponse:
        return JSONResponse(error_body(error.status, error.message, error.param, error.code), error.status)


def deployment_router() -> APIRouter:
    router = APIRouter(prefix="/deployments", tags=["deployments"])

    @router.post("", responses=_LAUNCH)
    async def create(body: DeploymentRequest, request: Request, wait: bool = False) -> dict[str, Any]:
        service = request.app.state.deployments
        deployment = await service.create(
            model=body.model, engine=body.engine, name=body.name, adapters=[_adapter(a) for a in body.adapters],
            dtype=body.dtype, max_model_len=body.max_model_len, keep_alive=body.keep_alive,
            engine_args=body.engine_args)
        if wait:
            deployment = await service.wait(deployment.id)
            if deployment.status != "ready":
                raise APIError(422, f"deployment {deployment.id} of {deployment.model} is {deployment.status}: "
                                    f"{deployment.error or 'undeployed while it loaded'}", param="model",
                               code="deployment_failed")
        return deployment.to_openai()

    @router.get("")
    async def list_deployments(request: Request, all: bool = False) -> dict[str, Any]:
        deployments = request.app.state.deployments.list(include_stopped=all)
        return {"object": "list", "data": [deployment.to_openai() for deployment in deployments]}

    @router.get("/{deployment_id}")
    async def retrieve(deployment_id: str, request: Request) -> dict[str, Any]:
        return request.app.state.deployments.get(deployment_id).to_openai()

    @router.get("/{deployment_id}/events")
    async def events(deployment_id: str, request: Request, after: int = 0) -> EventSourceResponse:
        service = request.app.state.deployments
        service.events(deployment_id, after)  # a 404 before the stream starts

        async def stream() -> AsyncIterator[str]:
            try:
                async for event in service.follow(deployment_id, after):
                    yield json.dumps(event, separators=(",", ":"))
            except DeploymentError as error:  # deleted from under the stream: say so in the stream
                yield json.dumps(error_body(error.status, error.message, error.param, error.code))

        return EventSourceResponse(stream(), sep="\n", ping=600)

    @router.delete("/{deployment_id}")
    async def delete(deployment_id: str, request: Request) -> dict[str, Any]:
        return (await request.app.state.deployments.delete(deployment_id)).to_openai()

    @router.post("/{deployment_id}/adapters", responses=_CONFLICT)
    async def add_adapter(deployment_id: str, body: AdapterRequest, request: Request) -> dict[str, Any]:
        service = request.app.state.deployments
        return (await service.add_adapter(deployment_id, _adapter(body.adapter))).to_openai()

    @router.delete("/{deployment_id}/adapters/{adapter_id:path}", responses=_CONFLICT)
    async def remove_adapter(deployment_id: str, adapter_id: str, request: Request) -> dict[str, Any]:
        service = request.app.state.deployments
        return (await service.remove_adapter(deployment_id, adapter_id)).to_openai()

    return router

