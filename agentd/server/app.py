"""The FastAPI app: OpenAI routes under /v1, /health, /metrics; models load in the background."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentd import tool_use
from agentd.agents.runtime import AGENT_TYPES, AgentLimits, AgentRuntime
from agentd.config import Settings, accepted_api_keys, model_specs
from agentd.deployments import DeploymentService
from agentd.jobs.evaluate import SELF_API_KEY_ENV, ServedModels
from agentd.jobs.fine_tune import validate_upload
from agentd.jobs.service import JobService
from agentd.server.agents import create_agent_completion, run_routes
from agentd.server.chat import create_chat_completion
from agentd.server.completions import create_completion
from agentd.server.dashboard import dashboard_routes, login_form
from agentd.server.deployments import deployment_router, install_deployment_errors
from agentd.server.auth import BearerGuard, RequireKey, api_key_guard
from agentd.server.errors import install_error_handlers
from agentd.server.evals import eval_router
from agentd.server.files import file_router
from agentd.server.fine_tuning import fine_tuning_routes
from agentd.server.leaderboard import leaderboard_routes
from agentd.server.metrics import ServerMetrics
from agentd.server.openapi import MODEL_ERRORS, describe_errors
from agentd.server.own_url import OwnURL, RecordOwnURL
from agentd.server.protocol import ChatCompletionRequest, CompletionRequest
from agentd.server.response_store import ResponseStore
from agentd.server.responses import response_routes
from agentd.server.tools import tool_router
from pipelines.embedded import EMBEDDED_MODEL_ID
from pipelines.registry import ModelRegistry
from tools.builtin.deployment import DeploymentTools
from tools.builtin.evaluation import EvaluationTools
from tools.builtin.jobs import JobTools
from tools.builtin.workflow import WorkflowTools
from tools.loading import build_registry
from tools.mcp_server import streamable_http
from tools.registry import ToolRegistry

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def agent_brain(settings: Settings, registry: ModelRegistry) -> str:
    """The served model agents think with: the embedded model comes with its tool-use adapter
    (offered as a model of its own, loaded on the first agent request) unless that is turned off."""
    model_id = settings.agent_model or next(iter(registry.specs), "")
    if model_id == EMBEDDED_MODEL_ID and settings.tool_use_adapter and tool_use.manifest() is not None:
        registry.add(tool_use.tool_use_spec())
        return tool_use.TOOL_USE_MODEL_ID
    return model_id


def tools_from_settings(settings: Settings) -> ToolRegistry:
    return build_registry(settings.data_dir, tool_files=settings.tools, remote_urls=settings.remote_tools,
                          mcp_targets=settings.mcp_servers, builtins=settings.builtin_tools,
                          image_pipeline=settings.image_pipeline)


def create_app(settings: Settings, registry: ModelRegistry | None = None, tools: ToolRegistry | None = None) -> FastAPI:
    """`registry` and `tools` let a caller share already-loaded engines and tools (tests, benchmarks).

    Raises ValueError (ToolLoadError) when a tools file, remote tool server or MCP server fails.
    """
    owns_registry = registry is None
    if registry is None:
        registry = ModelRegistry(model_specs(settings), settings.data_dir, dtype=settings.dtype,
                                 on_demand_memory_mb=settings.on_demand_memory_mb, backend=settings.engine,
                                 kv_cache_mb=settings.kv_cache_mb, precision=settings.openvino_precision)
    owns_tools = tools is None
    if tools is None:
        tools = tools_from_settings(settings)
    if settings.agent_model and settings.agent_model not in registry.specs:
        raise ValueError(f"--agent-model {settings.agent_model} is not among the served models {sorted(registry.specs)}")
    jobs = JobService(settings.data_dir, file_store=tools.context.file_store, base_folder=registry.folder,
                      max_concurrent=settings.max_concurrent_jobs)
    jobs.on_new_model(registry.add)  # each fine-tune as it succeeds, those from before at start
    if registry.resolve is None:  # checkpoints, and fine-tunes another process just finished
        registry.resolve = jobs.model_spec  # (a registry shared by several apps keeps the first's)
    job_tools = JobTools(jobs) if "finetune" not in tools and tools.context.file_store is not None else None
    if job_tools is not None:
        tools.add(job_tools)
    # Evaluation jobs open a model served from weights themselves, and reach any other served
    # model (upstream, agents) through this server's /v1, authenticating with a key the worker
    # inherits from the environment (never written into the job).
    own_url = OwnURL(settings)
    if settings.api_keys:
        os.environ[SELF_API_KEY_ENV] = settings.api_keys[0].get_secret_value()
    jobs.model_target = ServedModels(lambda: registry.specs, data_dir=settings.data_dir, self_url=own_url.v1,
                                     agents=lambda: list(AGENT_TYPES), find_spec=jobs.model_spec,
                                     dtype=settings.dtype, api_key_env=SELF_API_KEY_ENV if settings.api_keys else None,
                                     embedded_folder=lambda: registry.folder(EMBEDDED_MODEL_ID))
    eval_tools = EvaluationTools(jobs) if "evaluate" not in tools else None
    if eval_tools is not None:
        tools.add(eval_tools)
    deployments = DeploymentService(settings.data_dir, registry, resolve=jobs.model_spec,
                                    vllm_python=settings.vllm_python,
                                    vllm_startup_timeout_s=settings.vllm_startup_timeout_s,
                                    check_s=settings.deployment_check_s)
    deployment_tools = DeploymentTools(deployments) if "deploy" not in tools else None
    if deployment_tools is not None:
        tools.add(deployment_tools)
    workflow_tools = (WorkflowTools(jobs, deployments)
                      if "tune_and_evaluate" not in tools and tools.context.file_store is not None else None)
    if workflow_tools is not None:
        tools.add(workflow_tools)
    agents = AgentRuntime(tools, settings.data_dir, registry, agent_brain(settings, registry),
                          AgentLimits(max_steps=settings.agent_max_steps, time_limit_s=settings.agent_time_limit_s))
    responses = ResponseStore(settings.data_dir / "responses.sqlite")
    responses.mark_interrupted()
    mcp_endpoint, mcp_sessions = streamable_http(
        tools, loopback_only=settings.host in LOOPBACK and not settings.api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(registry.load_all()) if owns_registry else None
        await agents.open()
        await jobs.start()
        await deployments.start()
        async with mcp_sessions.run():
            yield
        if registry.resolve == jobs.model_spec:
            registry.resolve = None
        await deployments.close()
        await jobs.close()
        await agents.close()
        responses.close()
        if loading is not None:
            loading.cancel()
            await registry.close()
        if owns_tools:
            tools.close()
        else:  # a shared tool registry outlives this app's jobs service
            for toolkit in (job_tools, eval_tools, deployment_tools, workflow_tools):
                if toolkit is not None:
                    tools.remove_toolkit(toolkit)

    app = FastAPI(title="agentd", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.tools = tools
    app.state.agents = agents
    app.state.responses = responses
    app.state.jobs = jobs
    app.state.deployments = deployments
    app.state.metrics = ServerMetrics()
    install_error_handlers(app)
    install_deployment_errors(app)
    app.add_middleware(RecordOwnURL, own_url=own_url)
    api_keys = accepted_api_keys(settings)
    if api_keys:  # inside CORS (added next, so outside it): a refusal still carries the CORS headers
        app.add_middleware(RequireKey, keys=api_keys, open_paths=("/health", "/ui/login"), refuse_page=login_form)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    v1 = APIRouter(prefix="/v1", **api_key_guard(api_keys))

    @v1.get("/models")
    async def list_models() -> dict[str, Any]:
        jobs.notice_finished()  # a job a client just saw succeed is listed, not a tick later
        now = int(time.time())
        data = [
            {"id": spec.id, "object": "model", "created": now,
             "owned_by": "upstream" if spec.kind == "upstream" else "agentd", "parent": spec.parent}
            for spec in registry.specs.values()
        ] + [{"id": agent_id, "object": "model", "created": now, "owned_by": "agentd-agent", "parent": None}
             for agent_id in AGENT_TYPES]
        return {"object": "list", "data": data}

    @v1.post("/chat/completions", responses=MODEL_ERRORS)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        if body.model in AGENT_TYPES:
            return await create_agent_completion(body, request)
        return await create_chat_completion(body, request)  # leases the model: loads it on demand

    run_routes(v1)
    response_routes(v1)
    fine_tuning_routes(v1)
    leaderboard_routes(v1)

    @v1.post("/completions", responses=MODEL_ERRORS)
    async def completions(body: CompletionRequest, request: Request):
        return await create_completion(body, request)

    v1.include_router(tool_router(tools), prefix="/tools")
    v1.include_router(eval_router(settings.data_dir))
    v1.include_router(deployment_router())
    if tools.context.file_store is not None:
        v1.include_router(file_router(tools.context.file_store, max_upload_bytes=settings.max_upload_mb * 2**20,
                                      validators={"fine-tune": validate_upload}))
    app.include_router(v1)
    app.add_route("/mcp", BearerGuard(mcp_endpoint, api_keys))
    dashboard_routes(app, api_keys)

    @app.get("/health", responses={503: {"description": "A model failed or is still loading",
                                         "content": {"application/json": {}}}})
    async def health() -> JSONResponse:
        status = {m: "ready" for m in registry.engines} | {m: "failed" for m in registry.failures}
        status = {m: status.get(m, "on_demand" if m in registry.on_demand else "loading") for m in registry.specs}
        return JSONResponse({"status": "ok" if registry.ready else "unavailable", "models": status},
                            status_code=200 if registry.ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        m = app.state.metrics
        for model_id, engine in registry.engines.items():
            m.active_sequences.labels(model_id).set(engine.active_sequences)
            if engine.prefix_cache is not None:
                cached, total = engine.prefix_cache
                m.prefix_cached_tokens.labels(model_id).set(cached)
                m.prefix_hit_rate.labels(model_id).set(cached / total if total else 0.0)
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    describe_errors(app)
    return app
