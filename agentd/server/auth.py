"""API keys: the bearer check for the routes and for plain ASGI apps mounted beside them (MCP)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Sequence
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from agentd.server.errors import APIError, error_body

UNAUTHORIZED = "Incorrect or missing API key. Send it as `Authorization: Bearer <key>`."


def is_key(token: str, keys: Sequence[str]) -> bool:
    """Whether `token` is one of the keys (compared in constant time)."""
    return bool(token) and any(secrets.compare_digest(token, key) for key in keys)


def bearer_ok(authorization: str, keys: Sequence[str]) -> bool:
    """True when no keys are configured or the header carries one of them."""
    if not keys:
        return True
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and is_key(token, keys)


# The dashboard's browser sends the key as this cookie (set by /ui/login): a page load cannot carry a header.
KEY_COOKIE = "agentd_key"


def key_ok(request: Request, keys: Sequence[str]) -> bool:
    """The request carries one of the keys: as a bearer header, or as the dashboard's cookie."""
    return bearer_ok(request.headers.get("authorization", ""), keys) or is_key(request.cookies.get(KEY_COOKIE, ""), keys)


def api_key_guard(keys: Sequence[str]) -> dict[str, Any]:
    """`APIRouter(**api_key_guard(keys))`: its routes answer 401 without a key, and say so in OpenAPI."""
    if not keys:
        return {}

    def require_api_key(request: Request) -> None:
        if not key_ok(request, keys):
            raise APIError(401, UNAUTHORIZED, code="invalid_api_key")

    return {"dependencies": [Depends(require_api_key)],
            "responses": {401: {"description": "The API key is missing or wrong"}}}


class BearerGuard:
    """Wrap a plain ASGI app (the MCP endpoint) with the same bearer check as the routes.

    A class, not a closure: Starlette treats a plain function given to `add_route` as a
    request → response handler rather than as an ASGI app.
    """

    def __init__(self, asgi_app, keys: Sequence[str]):
        self.asgi_app = asgi_app
        self.keys = keys

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if not bearer_ok(header, self.keys):
                response = JSONResponse(error_body(401, UNAUTHORIZED, code="invalid_api_key"), 401)
                await response(scope, receive, send)
                return
        await self.asgi_app(scope, receive, send)


class RequireKey:
    """With keys set, every HTTP request but those to `open_paths` needs one: the API's routes (which
    also check, to document their 401), and the rest: /metrics, /openapi.json, /docs, the dashboard.
    A page a browser loads (`/`, `/ui…`) is refused with `refuse_page()`, where a person can give a key.
    """

    def __init__(self, asgi_app, keys: Sequence[str], open_paths: Collection[str] = ("/health",),
                 refuse_page: Callable[[], Response] | None = None):
        self.asgi_app, self.keys, self.open_paths, self.refuse_page = asgi_app, keys, frozenset(open_paths), refuse_page

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"] not in self.open_paths:
            request = Request(scope)
            if not key_ok(request, self.keys):
                page = scope["path"] == "/" or scope["path"].startswith("/ui")
                if page and self.refuse_page is not None:
                    response = self.refuse_page()
                else:
                    response = JSONResponse(error_body(401, UNAUTHORIZED, code="invalid_api_key"), 401)
                await response(scope, receive, send)
                return
        await self.asgi_app(scope, receive, send)
