"""The server's own /v1 base URL, for job workers that evaluate a served model through the API.

The port is known only once the server listens (tests and embedders bind port 0), so the URL
is taken from the first request's ASGI `server` (the socket it arrived on, a loopback address
for a local client), and from the settings until then.
"""

from __future__ import annotations

from typing import Any

from agentd.config import Settings

_ANY = ("0.0.0.0", "::", "")


class OwnURL:
    def __init__(self, settings: Settings):
        host = "127.0.0.1" if settings.host in _ANY else settings.host
        self._url = _base(host, settings.port, "http")

    def v1(self) -> str:
        return self._url

    def record(self, scope: dict[str, Any]) -> None:
        server = scope.get("server")
        if server and server[1]:
            host = "127.0.0.1" if server[0] in _ANY else server[0]
            self._url = _base(host, server[1], scope.get("scheme", "http"))


def _base(host: str, port: int, scheme: str) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if scheme == 'https' else 'http'}://{host}:{port}/v1"


class RecordOwnURL:
    """Pure ASGI middleware (streaming responses pass untouched) that keeps `OwnURL` current."""

    def __init__(self, app: Any, own_url: OwnURL):
        self.app, self.own_url = app, own_url

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.own_url.record(scope)
        await self.app(scope, receive, send)
