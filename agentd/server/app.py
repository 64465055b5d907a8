"""The FastAPI app: OpenAI routes under /v1, /health, /metrics; models load in the background."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentd.agents.runtime import AGENT_TYPES, AgentLimits, AgentRuntime
from agentd.config import Settings
from agentd.jobs import open_store
from agentd.jobs.fine_tune import validate_upload
from agentd.jobs.manager import JobManager
from agentd.server.agents import create_agent_completion, run_routes
from agentd.server.chat import create_chat_completion
from agentd.server.completions import create_completion
from agentd.server.errors import APIError, install_error_handlers
from agentd.server.fine_tuning import fine_tuned_spec, fine_tuning_routes
from agentd.server.metrics import ServerMetrics
from agentd.server.protocol import ChatCompletionRequest, CompletionRequest
from pipelines.registry import ModelRegistry, parse_model_spec
from tools.builtin.jobs import JobTools
from tools.http_server import UNAUTHORIZED, BearerGuard, bearer_ok, file_router, tool_router
from tools.loading import build_registry
from tools.mcp_server import streamable_http
from tools.registry import ToolRegistry

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _require_api_key(request: Request) -> None:
    if not bearer_ok(request.headers.get("authorization", ""), request.app.state.settings.api_keys):
        raise APIError(401, UNAUTHORIZED, code="invalid_api_key")


def tools_from_settings(settings: Settings) -> ToolRegistry:
    return build_registry(settings.data_dir, tool_files=settings.tools, remote_urls=settings.remote_tools,
                          mcp_targets=settings.mcp_servers, builtins=settings.builtin_tools)


def create_app(settings: Settings, registry: ModelRegistry | None = None, tools: ToolRegistry | None = None) -> FastAPI:
    """`registry` and `tools` let a caller share already-loaded engines and tools (tests, benchmarks).

    Raises ValueError (ToolLoadError) when a tools file, remote tool server or MCP server fails.
    """
    owns_registry = registry is None
    if registry is None:
        specs = [parse_model_spec(text) for text in settings.models]
        registry = ModelRegistry(specs, settings.data_dir, dtype=settings.dtype)
    owns_tools = tools is None
    if tools is None:
        tools = tools_from_settings(settings)
    if settings.agent_model and settings.agent_model not in registry.specs:
        raise ValueError(f"--agent-model {settings.agent_model} is not among the served models {sorted(registry.specs)}")
    jobs = JobManager(settings.data_dir, max_concurrent=settings.max_concurrent_jobs)

    def offer_fine_tuned_models() -> None:
        """Every succeeded fine-tune is a model, from the moment its worker records the success."""
        for job in jobs.store.list(kind="fine_tune", statuses=("succeeded",), limit=10_000):
            spec = fine_tuned_spec(job)
            if spec is not None and spec.id not in registry.specs:
                registry.add(spec)

    offer_fine_tuned_models()
    if "finetune" not in tools and tools.context.file_store is not None:
        # Its own store connection: a shared tool registry may outlive this app's job manager.
        tools.add(JobTools(open_store(settings.data_dir), tools.context.file_store, registry.folder))
    agents = AgentRuntime(tools, settings.data_dir, AgentLimits(max_steps=settings.agent_max_steps,
                                                                time_limit_s=settings.agent_time_limit_s))
    mcp_endpoint, mcp_sessions = streamable_http(
        tools, loopback_only=settings.host in LOOPBACK and not settings.api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(registry.load_all()) if owns_registry else None
        await agents.open()
        await jobs.start()
        async with mcp_sessions.run():
            yield
        await jobs.close()
        await agents.close()
        if loading is not None:
            loading.cancel()
            await registry.close()
        if owns_tools:
            tools.close()

    app = FastAPI(title="agentd", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.tools = tools
    app.state.agents = agents
    app.state.jobs = jobs
    app.state.background_tasks = set()
    app.state.upstream_chat_models = {}
    app.state.metrics = ServerMetrics()
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_require_api_key)])

    @v1.get("/models")
    async def list_models() -> dict[str, Any]:
        offer_fine_tuned_models()
        now = int(time.time())
        data = [
            {"id": spec.id, "object": "model", "created": now,
             "owned_by": "upstream" if spec.kind == "upstream" else "agentd"}
            for spec in registry.specs.values()
        ] + [{"id": agent_id, "object": "model", "created": now, "owned_by": "agentd-agent"}
             for agent_id in AGENT_TYPES]
        return {"object": "list", "data": data}

    @v1.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        if body.model in AGENT_TYPES:
            return await create_agent_completion(body, request)
        if body.model not in registry.specs:
            offer_fine_tuned_models()
        await registry.ensure(body.model)  # a fine-tune that just finished loads on its first request
        return await create_chat_completion(body, request)

    run_routes(v1)
    fine_tuning_routes(v1)

    @v1.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        if body.model not in registry.specs:
            offer_fine_tuned_models()
        await registry.ensure(body.model)
        return await create_completion(body, request)

    v1.include_router(tool_router(tools), prefix="/tools")
    if tools.context.file_store is not None:
        v1.include_router(file_router(tools.context.file_store, max_upload_bytes=settings.max_upload_mb * 2**20,
                                      validators={"fine-tune": validate_upload}))
    app.include_router(v1)
    app.add_route("/mcp", BearerGuard(mcp_endpoint, lambda: settings.api_keys))

    @app.get("/health")
    async def health() -> JSONResponse:
        status = {m: "ready" for m in registry.engines} | {m: "failed" for m in registry.failures}
        status = {m: status.get(m, "on_demand" if m in registry.on_demand else "loading") for m in registry.specs}
        return JSONResponse({"status": "ok" if registry.ready else "unavailable", "models": status},
                            status_code=200 if registry.ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        m = app.state.metrics
        for model_id, engine in registry.engines.items():
            m.active_sequences.labels(model_id).set(engine.active_sequences)
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return app
