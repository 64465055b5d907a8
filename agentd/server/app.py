"""The FastAPI app: OpenAI routes under /v1, /health, /metrics; models load in the background."""

from __future__ import annotations

import asyncio
import secrets
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentd.config import Settings
from agentd.server.chat import create_chat_completion
from agentd.server.completions import create_completion
from agentd.server.errors import APIError, install_error_handlers
from agentd.server.metrics import ServerMetrics
from agentd.server.protocol import ChatCompletionRequest, CompletionRequest
from pipelines.registry import ModelRegistry, parse_model_spec


def _require_api_key(request: Request) -> None:
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not any(secrets.compare_digest(token, k) for k in keys):
        raise APIError(
            401, "Incorrect or missing API key. Send it as `Authorization: Bearer <key>`.",
            code="invalid_api_key",
        )


def create_app(settings: Settings, registry: ModelRegistry | None = None) -> FastAPI:
    """`registry` lets a caller share already-loaded engines (tests, benchmarks)."""
    owns_registry = registry is None
    if registry is None:
        specs = [parse_model_spec(text) for text in settings.models]
        registry = ModelRegistry(specs, settings.data_dir, dtype=settings.dtype)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(registry.load_all()) if owns_registry else None
        yield
        if loading is not None:
            loading.cancel()
            await registry.close()

    app = FastAPI(title="agentd", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = ServerMetrics()
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_require_api_key)])

    @v1.get("/models")
    async def list_models() -> dict[str, Any]:
        now = int(time.time())
        data = [
            {"id": spec.id, "object": "model", "created": now,
             "owned_by": "upstream" if spec.kind == "upstream" else "agentd"}
            for spec in registry.specs.values()
        ]
        return {"object": "list", "data": data}

    @v1.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await create_chat_completion(body, request)

    @v1.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await create_completion(body, request)

    app.include_router(v1)

    @app.get("/health")
    async def health() -> JSONResponse:
        status = {m: "ready" for m in registry.engines} | {m: "failed" for m in registry.failures}
        status = {m: status.get(m, "loading") for m in registry.specs}
        return JSONResponse({"status": "ok" if registry.ready else "unavailable", "models": status},
                            status_code=200 if registry.ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        m = app.state.metrics
        for model_id, engine in registry.engines.items():
            m.active_sequences.labels(model_id).set(engine.active_sequences)
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return app
