"""`GET /v1/leaderboard`: every model × task evaluated on this server's data folder so far.

JSON by default; `?format=markdown|csv|png` for a table to paste or a chart to look at. The
rows come from the evaluation result store the jobs write (`agentd.jobs.evaluate`), so runs
made from the CLI on the same data folder are listed too.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from agentd.jobs.evaluate import leaderboard_of, results_path
from agentd.server.errors import APIError

_FORMATS = {"json": "application/json", "markdown": "text/markdown; charset=utf-8",
            "csv": "text/csv; charset=utf-8", "png": "image/png"}
_RESPONSES = {200: {"description": "The leaderboard in the asked format",
                    "content": {media.split(";")[0]: {} for media in _FORMATS.values()}}}


def leaderboard_routes(router: APIRouter) -> None:
    @router.get("/leaderboard", responses=_RESPONSES)
    async def leaderboard(request: Request,
                          format: str = Query("json", description="json, markdown, csv or png (a bar chart)",
                                              json_schema_extra={"enum": list(_FORMATS)})) -> Response:
        """Every model × task evaluated so far, with each score's standard error."""
        if format not in _FORMATS:  # checked here so that the error names `format`, as OpenAI's do
            raise APIError(400, f"format must be one of {', '.join(_FORMATS)}; got {format!r}", param="format",
                           code="invalid_value")
        path = results_path(request.app.state.jobs.data_dir)
        body = await asyncio.to_thread(_render, path, format)
        if body is None:
            if format == "png":
                raise APIError(404, "nothing has been evaluated yet, so there is no chart; run an evaluation first",
                               param="format", code="empty_leaderboard")
            body = {"json": json.dumps({"object": "leaderboard", "data": []}), "markdown": "", "csv": ""}[format]
        if format == "json":
            return JSONResponse(json.loads(body) if isinstance(body, str) else body)
        return Response(body, media_type=_FORMATS[format])


def _render(path: Path, format: str) -> str | bytes | dict | None:
    board = leaderboard_of(path)
    if board is None:
        return None
    if format == "json":
        return board.json()
    if format == "markdown":
        return board.markdown()
    if format == "csv":
        return board.csv()
    with tempfile.TemporaryDirectory(prefix="agentd-leaderboard-") as folder:
        chart = Path(folder) / "leaderboard.png"
        board.png(chart)
        return chart.read_bytes()
