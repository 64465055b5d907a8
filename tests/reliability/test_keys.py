"""With API keys set, every route but /health refuses a missing or a wrong key: the API, the
documents, the metrics, MCP and the dashboard."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.routing import Route

from tests.conftest import start_server

KEY = "correct-horse"


@pytest.fixture(scope="module")
def guarded(registry):
    running = start_server(registry, api_keys=[KEY])
    yield running
    running.stop()


def every_route(server) -> list[tuple[str, str]]:
    """(method, path) of each route: those the OpenAPI document lists and those it leaves out (the
    documents themselves, MCP, the dashboard), path parameters filled in with an id that does not exist."""
    document = httpx.get(f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    found = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    for route in server.app.routes:
        if isinstance(route, Route):
            found |= {(method, route.path) for method in route.methods or {"GET", "POST"} if method != "HEAD"}
    return sorted((method, re.sub(r"\{[^}]+\}", "x", path)) for method, path in found)


def test_every_route_but_health_refuses_a_missing_or_wrong_key(guarded):
    routes = every_route(guarded)
    paths = {path for _, path in routes}
    assert {"/v1/chat/completions", "/v1/responses", "/v1/files", "/openapi.json", "/docs", "/metrics", "/mcp", "/ui",
            "/ui/x", "/v1/tools/calculator", "/health"} <= paths  # the list is the app's, not written by hand
    let_through = []
    with httpx.Client(base_url=guarded.url, timeout=30) as client:
        for method, path in routes:
            if path == "/health":
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                reply = client.request(method, path, headers=headers, json={} if method == "POST" else None)
                if reply.status_code != 401:
                    let_through.append((method, path, headers, reply.status_code))
        assert client.get("/health").status_code == 200
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get("/ui", cookies={"agentd_key": "wrong"}).status_code == 401
        assert client.get("/ui", cookies={"agentd_key": KEY}).status_code == 200
    assert let_through == []
