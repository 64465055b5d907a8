"""The dashboard at /ui: one page, its script and its style, served beside the API behind the same keys.

A browser cannot put a bearer header on a page load, so with keys set the page answers 401 with a
small form (`login_form`, which auth.RequireKey sends); a right key posted to /ui/login comes back
as a cookie (HttpOnly, SameSite=Strict: sent by this server's own pages only, so another site cannot
make a browser act with it), which the API accepts as it accepts the header. The page then calls
the same /v1 routes any client calls.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from agentd.server.auth import KEY_COOKIE, is_key

UI = Path(__file__).parent / "ui"
_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# Every page load fetches the files it was served with: an upgraded server is never shown with an old script.
_FRESH = {"Cache-Control": "no-cache"}


def dashboard_routes(app: FastAPI, keys: Sequence[str]) -> None:
    # Checked by auth.RequireKey (the login's own check is the key it is given).
    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/ui", 307)

    @app.get("/ui", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(UI / "index.html", media_type="text/html", headers=_FRESH)

    @app.get("/ui/{asset}", include_in_schema=False)
    async def asset(asset: str) -> Response:
        if asset not in _ASSETS:  # the names are fixed: nothing else under ui/ (or above it) is served
            return HTMLResponse("not found", 404)
        return FileResponse(UI / asset, media_type=_ASSETS[asset], headers=_FRESH)

    @app.post("/ui/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        key = str((await request.form()).get("key") or "")
        if keys and not is_key(key, keys):
            return login_form("That key is not one of this server's API keys.")
        response = RedirectResponse("/ui", 303)
        if keys:
            response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", path="/")
        return response


def login_form(problem: str = "") -> HTMLResponse:
    note = f'<p class="error">{html.escape(problem)}</p>' if problem else ""
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>agentd — API key</title></head>"
        "<body style='font:14px system-ui;margin:3rem'><h1>agentd</h1>"
        "<p>This server asks for an API key (<code>AGENTD_API_KEYS</code>).</p>" + note +
        "<form method=post action=/ui/login><input name=key type=password autofocus aria-label='API key'> "
        "<button type=submit>Open the dashboard</button></form></body></html>", 401)
