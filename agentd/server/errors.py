"""Every error leaves the server in OpenAI's shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentd.store import StoreError
from pipelines.engine import EngineError

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    503: "service_unavailable",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @classmethod
    def from_engine(cls, error: EngineError) -> APIError:
        return cls(error.status, error.message, param=error.param, code=error.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p != "body"]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part and not str(part)[0].isupper() and "[" not in str(part):
            # Union branches show up in `loc` as type names (e.g. "UserMessage"): skip those.
            text += f".{part}" if text else str(part)
    return text or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error_body(error.status, error.message, error.param, error.code), error.status)

    @app.exception_handler(EngineError)
    async def _engine_error(_: Request, error: EngineError) -> JSONResponse:
        return JSONResponse(error_body(error.status, error.message, error.param, error.code), error.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body(400, f"Invalid JSON body: {first.get('msg')}"), 400)
        param = _param(tuple(first.get("loc", ())))
        message = f"{param or 'body'}: {first.get('msg')}"
        return JSONResponse(error_body(400, message, param, "invalid_value"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        # Keeps the headers an HTTPException carries (`WWW-Authenticate`, `Allow`).
        return JSONResponse(error_body(error.status_code, str(error.detail)), error.status_code, headers=error.headers)

    @app.exception_handler(StoreError)
    async def _store(_: Request, error: StoreError) -> JSONResponse:
        # A locked or full database is the server's state, not a bug: the client may retry.
        log.error("data store unavailable: %s", error)
        return JSONResponse(error_body(503, f"the server's data store is unavailable ({error.reason}); "
                                            "nothing was recorded, try again shortly"), 503)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(error_body(500, "internal error; the server log has the details"), 500)
